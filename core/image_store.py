"""Content-addressed PNGs: identical bytes are stored once, by their SHA-256, on disk or in an S3 bucket.

Both stores sit behind `ImageStore`. Rows take their images through `ImageStore.saving`, which locks the hash's
`images` row in the same transaction as the row that uses it; `remove_unused` takes the same lock before it
deletes anything, so a file can never disappear between a writer finding it and the writer's row committing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.errors import Unavailable, first_line
from core.png import check_png
from core.settings import Settings
from models import Achievement, ImageCacheEntry, ImageFile, Storefront, utcnow

log = logging.getLogger(__name__)
SHA256_NAME = re.compile(r"[0-9a-f]{64}")
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    size: int
    width: int
    height: int

    def columns(self) -> dict[str, object]:
        """The values of a row's image columns."""
        return {"image_sha256": self.sha256, "image_size": self.size,
                "image_width": self.width, "image_height": self.height}


def claim(session: Session, sha256: str, size: int) -> None:
    """Create or lock the hash's `images` row until this transaction ends (an upsert: PostgreSQL locks the row,
    SQLite the whole database), so no remover can delete its file meanwhile and no writer can race this one."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(ImageFile).values(sha256=sha256, size=size, created_at=utcnow())
    # DO UPDATE rather than DO NOTHING: only an update takes the row lock on a row that already exists.
    session.execute(statement.on_conflict_do_update(index_elements=["sha256"],
                                                    set_={"size": ImageFile.__table__.c.size}))


def used_by_a_row(sha256):
    """The condition that a storefront, an achievement (its badge or its share card) or an image cache entry uses
    the hash (a value, or a column such as `ImageFile.sha256`): every row that keeps a file."""
    return or_(exists().where(Storefront.image_sha256 == sha256), exists().where(Achievement.image_sha256 == sha256),
               exists().where(Achievement.share_card_sha256 == sha256),
               exists().where(ImageCacheEntry.image_sha256 == sha256))


def in_use(session: Session, sha256: str) -> bool:
    """Whether a committed (or this transaction's) row uses the hash (see `used_by_a_row`)."""
    return bool(session.scalar(select(used_by_a_row(sha256))))


class ImageStore:
    """Where PNGs live, named by hash; subclasses say how to test, write, read and delete one."""

    def exists(self, sha256: str) -> bool:
        raise NotImplementedError

    def write(self, sha256: str, png: bytes) -> None:
        """Store `png` under `sha256`, all or nothing: a reader never sees half a PNG."""
        raise NotImplementedError

    def read(self, sha256: str) -> bytes:
        """The PNG's bytes; FileNotFoundError when it is not stored."""
        raise NotImplementedError

    def delete(self, sha256: str) -> bool:
        """Remove the PNG; whether it was there."""
        raise NotImplementedError

    def hashes(self) -> Iterator[str]:
        """Every stored hash."""
        raise NotImplementedError

    def status(self) -> str:
        """'ok' when the store takes files, else a snake_case reason (for /healthz)."""
        raise NotImplementedError

    def describe(self, png: bytes, size: tuple[int, int] | None = None, sha256: str | None = None) -> StoredImage:
        """Hash `png` (unless the caller knows its hash); without `size` (the caller vouching it checked the bytes
        already), check it is a PNG."""
        width, height = size or check_png(png)
        return StoredImage(sha256 or hashlib.sha256(png).hexdigest(), len(png), width, height)

    def put(self, png: bytes, size: tuple[int, int] | None = None) -> StoredImage:
        """Store `png` once under its hash (no lock: rows go through `saving`)."""
        image = self.describe(png, size)
        if not self.exists(image.sha256):
            self.write(image.sha256, png)
        return image

    def remove_unused(self, session: Session, hashes: Iterable[str | None]) -> int:
        """Delete the PNGs among `hashes` that no row uses (see `in_use`); how many files went.

        One short transaction per hash, each holding that hash's lock only: a writer waiting on it finds the file
        gone and writes it again; one holding it makes this wait, then see its row. Holding a single lock at a time
        also means this can never be half of a deadlock. A file the store refuses to delete keeps its `images` row,
        so that `unused` finds it for the next removal: the store never forgets a file it holds.
        """
        removed = 0
        for sha256 in sorted({h for h in hashes if h}):
            try:
                claim(session, sha256, 0)
                if not in_use(session, sha256):
                    removed += self.delete(sha256)
                    session.execute(delete(ImageFile).where(ImageFile.sha256 == sha256))
                session.commit()
            except Unavailable as refused:  # this file stays, with its row; the others may still go
                session.rollback()
                log.warning("image %s not removed, left for the next removal: %s", sha256, refused.message)
            except BaseException:
                session.rollback()
                raise
        return removed

    @staticmethod
    def unused(session: Session) -> list[str]:
        """The hashes of the `images` rows no row uses: files an earlier removal left."""
        return list(session.scalars(select(ImageFile.sha256).where(~used_by_a_row(ImageFile.sha256))))

    @contextmanager
    def saving(self, session: Session) -> Iterator[Callable[..., StoredImage]]:
        """Store files and commit rows together: if anything fails, roll back and remove the new files.

        `put(png, size=None)` locks the hash (see `claim`) in the session's transaction before it looks for the
        file, and the lock lasts until the rows that use it commit.
        """
        written: list[str] = []

        def put(png: bytes, size: tuple[int, int] | None = None, sha256: str | None = None) -> StoredImage:
            image = self.describe(png, size, sha256)
            claim(session, image.sha256, image.size)
            if not self.exists(image.sha256):
                self.write(image.sha256, png)
                written.append(image.sha256)
            return image

        try:
            yield put
            session.commit()
        except BaseException:
            self.forget(session, written)
            raise

    def forget(self, session: Session, written: list[str]) -> None:
        """Roll back a failed save and remove the files it wrote; when the database cannot say whether another
        writer uses them (it is down, so none can have committed), remove them all the same."""
        try:
            session.rollback()
            self.remove_unused(session, written)
        except Exception as error:
            log.warning("removing the %d file(s) of a failed save without the database (%s)", len(written),
                        type(error).__name__)
            for sha256 in written:
                try:
                    self.delete(sha256)
                except Unavailable:
                    log.warning("image %s of a failed save could not be removed", sha256)


class DiskStore(ImageStore):
    """PNG files under `root`, at `<sha256[:2]>/<sha256>.png`, written atomically and readable by a web server."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.folder = os.path.abspath(self.root)

    def relative_path(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256}.png"

    def path(self, sha256: str) -> Path:
        return self.root / self.relative_path(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def write(self, sha256: str, png: bytes) -> None:
        path = self.path(sha256)
        # A temporary file renamed into place: a reader never sees half a PNG.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        except OSError as error:
            raise refused("write", error) from error
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(png)
                os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would keep nginx's workers out
            os.replace(tmp, path)
        except BaseException as error:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise refused("write", error) from error
            raise

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def delete(self, sha256: str) -> bool:
        path = self.path(sha256)
        existed = path.exists()
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise refused("delete", error) from error
        return existed

    def hashes(self) -> Iterator[str]:
        for path in sorted(self.root.glob("??/*.png")):
            if SHA256_NAME.fullmatch(path.stem):
                yield path.stem

    def status(self) -> str:
        try:  # a named file, as the PNGs are: an unnamed one (O_TMPFILE) may pass where a name cannot be written
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".healthz-") as probe:
                probe.write(b"ok")
        except OSError as error:
            log.warning("health check: image folder not writable (%s)", type(error).__name__)
            return "not_writable"
        return "ok"


class S3Store(ImageStore):
    """PNG objects in an S3-compatible bucket, at `<prefix>/<sha256[:2]>/<sha256>.png`, through boto3."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, public_base_url: str | None = None,
                 url_ttl_s: int = 3600) -> None:
        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = endpoint_url
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.url_ttl_s = url_ttl_s
        self._client = None
        self._client_pid = 0

    @property
    def client(self):
        """This process's boto3 client, made on first use: its connection pool must not cross a fork."""
        if self._client is None or self._client_pid != os.getpid():
            import boto3  # heavy: only deployments on S3 pay for it
            from botocore.config import Config

            session = boto3.session.Session()
            self._client = session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=session.region_name or "us-east-1",
                # Short connect timeout: /healthz and a request must not hang for a minute on an unreachable store.
                config=Config(signature_version="s3v4", retries={"mode": "standard"}, connect_timeout=5,
                              read_timeout=30),
            )
            self._client_pid = os.getpid()
        return self._client

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/{sha256[:2]}/{sha256}.png".lstrip("/")

    @contextmanager
    def answering(self, action: str) -> Iterator[None]:
        """Turn the bucket's refusals and silences into a 503 storage_unavailable (a missing key stays itself)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as error:
            raise refused(action, error) from error

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        with self.answering("read"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def write(self, sha256: str, png: bytes) -> None:
        # One PUT is atomic in S3: the object appears whole or not at all.
        with self.answering("write"):
            self.client.put_object(Bucket=self.bucket, Key=self.key(sha256), Body=png, ContentType="image/png",
                                   CacheControl=IMMUTABLE)

    def open(self, sha256: str):
        """The object's streaming body and its length; FileNotFoundError when it is not stored."""
        from botocore.exceptions import ClientError

        with self.answering("read"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise FileNotFoundError(self.key(sha256)) from None
                raise
        return answer["Body"], answer["ContentLength"]

    def read(self, sha256: str) -> bytes:
        body, _length = self.open(sha256)
        with body:
            return body.read()

    def delete(self, sha256: str) -> bool:
        existed = self.exists(sha256)
        with self.answering("delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        return existed

    def hashes(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""):
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1].removesuffix(".png")
                if SHA256_NAME.fullmatch(name) and item["Key"] == self.key(name):
                    yield name

    def url(self, sha256: str) -> str:
        """Where a browser fetches the PNG: under IMAGE_PUBLIC_BASE_URL, else a presigned URL."""
        if self.public_base_url:
            return f"{self.public_base_url}/{self.key(sha256)}"
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                                        "Key": self.key(sha256)},
                                                  ExpiresIn=self.url_ttl_s)

    def status(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # a write, as a generation makes: a bucket may answer reads and refuse writes
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/.healthz".lstrip("/"), Body=b"ok")
        except (BotoCoreError, ClientError) as error:
            log.warning("health check: image bucket refuses a write (%s)", type(error).__name__)
            return "not_writable"
        return "ok"


def refused(action: str, error: BaseException) -> Unavailable:
    """The 503 of a store that refuses to `action` a file (a read-only folder, a full disk, a bucket that fails)."""
    log.warning("image store: %s refused (%s)", action, first_line(error))
    return Unavailable("storage_unavailable", f"The image store refuses to {action} files; try again later.")


def store_for(settings: Settings) -> ImageStore:
    """The store IMAGE_STORE_URL names (files under IMAGE_DIR when unset)."""
    return open_store(settings.image_store_url, settings.image_dir, endpoint_url=settings.s3_endpoint_url,
                      public_base_url=settings.image_public_base_url, url_ttl_s=settings.image_url_ttl_s)


def open_store(url: str | None, image_dir: Path, *, endpoint_url: str | None = None,
               public_base_url: str | None = None, url_ttl_s: int = 3600) -> ImageStore:
    """The store a URL names, like DATABASE_URL: `s3://bucket[/prefix]`, a folder path, or None for `image_dir`."""
    if url and url.lower().startswith("s3://"):
        return S3Store(url, endpoint_url=endpoint_url, public_base_url=public_base_url, url_ttl_s=url_ttl_s)
    if url and url.startswith("file://"):
        return DiskStore(Path(urlsplit(url).path))
    return DiskStore(Path(url) if url else image_dir)
