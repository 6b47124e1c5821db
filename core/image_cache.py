"""The exact-request image cache: a picture already paid for is reused for the same request, by every process.

Two image requests are the same when their provider, model, kind, prompt and size (and seed, when one is set)
are: the SHA-256 of those is the key of an `image_cache` row that points at the stored PNG. The row lives in the
database beside the images, so every process and machine shares it; and it is the single flight too: the first
request for a key claims it (a unique insert, or an update only one writer can win) for as long as a provider call
may last, and identical requests arriving meanwhile wait for its picture instead of calling the vendor. A claimer
that fails gives the key back; one that dies lets its lease lapse, and a waiter takes over (its own job, run again
after its runner died, takes over at once).

An entry older than IMAGE_CACHE_TTL_S is drawn again at its next request; the job sweeper purges such entries with
the files no other row uses (a cached picture's file stays while its entry does). IMAGE_CACHE_TTL_S=0 turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.http_client import deadline_s
from core.image_store import ImageStore
from core.observability import current_call
from core.provider_types import GeneratedImage, ImageSpec
from core.settings import Settings
from models import ImageCacheEntry, utcnow

log = logging.getLogger(__name__)

Entry = ImageCacheEntry
POLL_FIRST_S, POLL_MAX_S = 0.02, 0.25
PURGE_BATCH = 500


def request_key(provider: str, model: str, spec: ImageSpec, seed: int | None = None) -> str:
    """The key of an exact image request: provider, model, kind, prompt, size, and the seed when one is set."""
    parts = [provider, model, spec.kind, spec.prompt, spec.width, spec.height]
    if seed is not None:
        parts.append(seed)
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


class Flight:
    """One image request going through the cache: `image` is the cached picture (None: draw one, then `keep` it)."""

    def __init__(self, cache: ImageCache | None = None, key: str | None = None, lease: float | None = None,
                 image: GeneratedImage | None = None, labels: tuple[str, str, str] = ("", "", "")) -> None:
        self.cache, self.key, self.lease, self.image, self.labels = cache, key, lease, image, labels
        self.kept = False

    def keep(self, image: GeneratedImage) -> GeneratedImage:
        """Store the picture just drawn and make it the key's, for the next identical request; the picture comes
        back with its hash."""
        if self.cache is not None and self.key is not None:
            image = replace(image, sha256=self.cache.keep(self.key, image, self.labels))
            self.kept = True
        return image


@contextmanager
def flight(cache: ImageCache | None, provider: str, model: str, spec: ImageSpec, *,
           fresh: bool = False) -> Iterator[Flight]:
    """The cached picture of this exact request, or the claim to draw it (given back if the drawing fails).

    `fresh` draws a new picture whatever the cache holds, and makes it the cached one.
    """
    if cache is None or not cache.enabled:
        yield Flight()
        return
    key, labels = request_key(provider, model, spec), (provider, model, spec.kind)
    image, lease = (None, None) if fresh else cache.wait_or_claim(key, labels)
    current = Flight(cache, key, lease, image, labels)
    try:
        yield current
    finally:
        if lease is not None and not current.kept:
            cache.release(key, lease)


class ImageCache:
    """The `image_cache` rows and the store their PNGs are in."""

    def __init__(self, engine: Engine, store: ImageStore, settings: Settings) -> None:
        self.engine, self.store, self.settings = engine, store, settings

    @property
    def enabled(self) -> bool:
        return self.settings.image_cache_ttl_s > 0

    @property
    def lease_s(self) -> float:
        """How long a claim holds: the longest a provider call may take, and the time to store its picture."""
        return deadline_s(self.settings) + 30

    def drawn_after(self) -> datetime:
        """Entries drawn before this are too old to reuse."""
        return utcnow() - timedelta(seconds=self.settings.image_cache_ttl_s)

    def wait_or_claim(self, key: str, labels: tuple[str, str, str]) -> tuple[GeneratedImage | None, float | None]:
        """The cached picture; else a claim on the key (its lease) once nobody else holds one, waiting for the
        holder's picture meanwhile. After waiting a whole lease in vain, draw without a claim."""
        deadline = time.monotonic() + self.lease_s
        delay = POLL_FIRST_S
        while True:
            with self.engine.connect() as connection:
                row = connection.execute(select(Entry.image_sha256, Entry.width, Entry.height, Entry.created_at,
                                                Entry.claimed_until, Entry.claimed_by).where(Entry.key == key)).first()
            if row is not None and row.image_sha256 and row.created_at > self.drawn_after():
                try:
                    png = self.store.read(row.image_sha256)
                except FileNotFoundError:  # its file is gone (a store emptied by hand): draw it again
                    log.warning("image cache: the file of entry %s is missing", key[:12])
                else:
                    return GeneratedImage(png, row.width, row.height, labels[0], cached=True,
                                          sha256=row.image_sha256), None
            now = time.time()
            lease = now + self.lease_s
            owner = current_call().job_id
            if row is None:
                if self._insert_claim(key, labels, lease, owner):
                    return None, lease
                continue  # another request claimed it first: wait for its picture
            if row.claimed_until is None or row.claimed_until < now or (owner and row.claimed_by == owner):
                if self._take_claim(key, row.image_sha256, row.claimed_until, lease, owner):
                    return None, lease
                continue
            if time.monotonic() >= deadline:
                log.warning("image cache: waited %.0f s for entry %s in vain; drawing it", self.lease_s, key[:12])
                return None, None
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)

    def _insert_claim(self, key: str, labels: tuple[str, str, str], lease: float, owner: str | None) -> bool:
        provider, model, kind = labels
        try:
            with self.engine.begin() as connection:
                connection.execute(Entry.__table__.insert().values(
                    key=key, provider=provider, model=model, kind=kind, created_at=utcnow(), claimed_until=lease,
                    claimed_by=owner))
        except IntegrityError:
            return False
        return True

    def _take_claim(self, key: str, image_sha256: str | None, claimed_until: float | None, lease: float,
                    owner: str | None) -> bool:
        """Claim an entry as it was read (no picture to reuse; no live claim, or its own job's): only one writer wins
        the update."""
        same_image = Entry.image_sha256.is_(None) if image_sha256 is None else Entry.image_sha256 == image_sha256
        same_claim = Entry.claimed_until.is_(None) if claimed_until is None else Entry.claimed_until == claimed_until
        with self.engine.begin() as connection:
            taken = connection.execute(update(Entry).where(Entry.key == key, same_image, same_claim)
                                       .values(claimed_until=lease, claimed_by=owner)).rowcount
        return taken == 1

    def release(self, key: str, lease: float) -> None:
        """Give back a claim whose drawing failed, so that a waiting request may try."""
        try:
            with self.engine.begin() as connection:
                connection.execute(delete(Entry).where(Entry.key == key, Entry.claimed_until == lease,
                                                       Entry.image_sha256.is_(None)))
                connection.execute(update(Entry).where(Entry.key == key, Entry.claimed_until == lease)
                                   .values(claimed_until=None, claimed_by=None))
        except Exception:  # the lease lapses by itself
            log.exception("image cache: could not give back the claim of entry %s", key[:12])

    def keep(self, key: str, image: GeneratedImage, labels: tuple[str, str, str]) -> str:
        """Store the picture and point the key at it, in one transaction; the picture it replaces, if any, goes
        with the files no row uses. The picture's hash."""
        provider, model, kind = labels
        with Session(self.engine) as session:
            with self.store.saving(session) as put:
                stored = put(image.png, size=(image.width, image.height))
                replaced = session.scalar(select(Entry.image_sha256).where(Entry.key == key))
                values = {"image_sha256": stored.sha256, "width": image.width, "height": image.height,
                          "created_at": utcnow(), "claimed_until": None, "claimed_by": None}
                insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
                session.execute(insert(Entry).values(key=key, provider=provider, model=model, kind=kind, **values)
                                .on_conflict_do_update(index_elements=["key"], set_=values))
            if replaced and replaced != stored.sha256:
                self.store.remove_unused(session, [replaced])
        return stored.sha256

    def purge(self) -> int:
        """Delete the entries too old to reuse (every one when the cache is off) and the files no row uses
        then; entries under a live claim stay. How many entries went."""
        unclaimed = or_(Entry.claimed_until.is_(None), Entry.claimed_until < time.time())
        old = or_(Entry.image_sha256.is_(None), Entry.created_at <= self.drawn_after()) if self.enabled else true()
        purged = 0
        with Session(self.engine) as session:
            while True:
                rows = session.execute(select(Entry.key, Entry.image_sha256).where(unclaimed, old)
                                       .limit(PURGE_BATCH)).all()
                if not rows:
                    return purged
                # The same conditions again: an entry drawn anew since it was read stays.
                session.execute(delete(Entry).where(Entry.key.in_([row.key for row in rows]), unclaimed, old))
                session.commit()
                self.store.remove_unused(session, [row.image_sha256 for row in rows])
                purged += len(rows)
