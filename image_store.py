"""Content-addressed PNG files on disk: identical bytes are one file, shared by every row that has them."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Achievement, Storefront


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


class ImageStore:
    """PNG files under `root`, named by the SHA-256 of their bytes and written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.png"

    def put(self, png: bytes) -> StoredImage:
        """Check that `png` is a decodable PNG and store it, once, under its hash."""
        with Image.open(io.BytesIO(png)) as image:
            if image.format != "PNG":
                raise ValueError("not a PNG")
            width, height = image.size
            image.verify()
        sha256 = hashlib.sha256(png).hexdigest()
        path = self.path(sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # A temporary file renamed into place: a reader never sees half a PNG.
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(png)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return StoredImage(sha256, len(png), width, height)

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def remove_unused(self, session: Session, hashes: Iterable[str | None]) -> int:
        """Delete the files among `hashes` that no storefront or achievement row uses any more."""
        candidates = {h for h in hashes if h}
        if not candidates:
            return 0
        used = set()
        for model in (Storefront, Achievement):
            used |= set(session.scalars(select(model.image_sha256).where(model.image_sha256.in_(candidates))))
        removed = 0
        for sha256 in candidates - used:
            path = self.path(sha256)
            if path.exists():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    @contextmanager
    def saving(self, session: Session) -> Iterator[Callable[[bytes], StoredImage]]:
        """Store files and commit rows together: if anything fails, roll back and remove the new files."""
        written: list[str] = []

        def put(png: bytes) -> StoredImage:
            image = self.put(png)
            written.append(image.sha256)
            return image

        try:
            yield put
            session.commit()
        except BaseException:
            session.rollback()
            self.remove_unused(session, written)
            raise
