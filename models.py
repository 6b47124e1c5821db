"""Every table of the service, as SQLAlchemy 2 models: users, storefronts, achievements and who holds which, badge
credentials, generation jobs, stored images and the image cache, the ledger of provider calls and the counters
every process shares.

Alembic's autogenerate sees exactly what this module declares (`migrations/env.py` imports it), so no table is
declared anywhere else. This module imports no other module of the project.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere lets ids reach 2^63-1.
Id = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class UserAchievement(Base):
    """The award of one achievement to one user; the primary key makes it happen at most once."""

    __tablename__ = "user_achievements"

    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    achievement_id: Mapped[int] = mapped_column(
        Id, ForeignKey("achievements.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    awarded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # {"tech": ["mouse", "monitor"], "food": [...]}: theme to product names, in the user's order.
    recommendations: Mapped[dict[str, list[str]]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A random value that never leaves the database: badge credentials name the user by a UUID derived from it, so
    # their subject id is stable, yet says nothing of the user's id (see badges/issuer.py, subject_id). Nullable
    # only because SQLite adds a NOT NULL column by rebuilding the table, whose DROP would cascade to the awards;
    # every row has one (migration 0006 filled them in).
    subject_key: Mapped[str | None] = mapped_column(String(36), default=lambda: str(uuid.uuid4()))

    storefronts: Mapped[list[Storefront]] = relationship(back_populates="user", order_by="Storefront.id")
    achievements: Mapped[list[Achievement]] = relationship(
        secondary="user_achievements", order_by="Achievement.id", viewonly=True
    )

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "recommendations": self.recommendations}


def image_src(sha256: str | None) -> str | None:
    """The immutable, content-addressed URL of a PNG (`/images/<sha256>.png`), or None without one."""
    return f"/images/{sha256}.png" if sha256 else None


class ImageFile(Base):
    """One stored PNG, by hash: writers lock this row while they store bytes, the remover while it deletes them."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImageCacheEntry(Base):
    """A picture already paid for: the exact request that drew it (its key) and the stored PNG it reuses.

    A row without an image is a request under way: its `claimed_until` lease is what makes identical requests at the
    same moment wait for one vendor call instead of making their own (see core/image_cache.py).
    """

    __tablename__ = "image_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of provider, model, kind, prompt, size
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)  # when it was drawn
    claimed_until: Mapped[float | None] = mapped_column(Float, default=None)  # seconds since the epoch
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)  # the job (its run again takes over)


class ImageColumns:
    """Where a row's PNG is: a content-addressed file named by its SHA-256, never bytes in the database."""

    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    image_size: Mapped[int | None] = mapped_column(Integer, default=None)
    image_width: Mapped[int | None] = mapped_column(Integer, default=None)
    image_height: Mapped[int | None] = mapped_column(Integer, default=None)


class Storefront(ImageColumns, Base):
    __tablename__ = "storefronts"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(400))
    description: Mapped[str] = mapped_column(Text)
    style: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="storefronts")

    @property
    def image_url(self) -> str:
        return f"/download-user-storefront-image?user_id={self.user_id}&storefront_id={self.id}"

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "style": self.style,
            "storefront_image_name": self.name,
            "image_url": self.image_url,
            "image_src": image_src(self.image_sha256),
            "created_at": self.created_at.isoformat(),
        }


class Achievement(ImageColumns, Base):
    __tablename__ = "achievements"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    occasion: Mapped[str] = mapped_column(String(200))
    product_type: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The 1200x630 link-preview card of its share pages, drawn once on the first request (see badges/pages.py).
    # Last, after the image columns, where migration 0008 added it.
    share_card_sha256: Mapped[str | None] = mapped_column(String(64), index=True, default=None, sort_order=1)

    @classmethod
    def listed_columns(cls) -> tuple:
        """The columns `as_dict` takes, in order: long lists select these rather than build an object per row."""
        return (cls.id, cls.name, cls.description, cls.occasion, cls.product_type, cls.image_sha256, cls.created_at)

    @staticmethod
    def as_dict(achievement_id, name, description, occasion, product_type, image_sha256, created_at) -> dict:
        """The JSON form of an achievement, from the values of `listed_columns()`."""
        return {
            "id": achievement_id,
            "name": name,
            "description": description,
            "occasion": occasion,
            "product_type": product_type,
            "image_url": f"/get-achievement-image?achievement_id={achievement_id}" if image_sha256 else None,
            "image_src": image_src(image_sha256),
            "created_at": created_at.isoformat(),
        }

    def to_dict(self) -> dict[str, object]:
        return self.as_dict(*(getattr(self, column.key) for column in self.listed_columns()))


class BadgeCredential(Base):
    """An Open Badges credential issued for an award; its `serial` is its place in the revocation status lists."""

    __tablename__ = "badge_credentials"
    # AUTOINCREMENT: a serial (a status-list bit) is never handed out twice, even after rows are deleted.
    __table_args__ = {"sqlite_autoincrement": True}

    serial: Mapped[int] = mapped_column(Id, primary_key=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)  # a UUID: the credential's id is urn:uuid:<id>
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    achievement_id: Mapped[int] = mapped_column(Id, ForeignKey("achievements.id", ondelete="CASCADE"), index=True)
    salt: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Job(Base):
    """One generation: its parameters, where it stands, and the answer it ended with (see the jobs package)."""

    __tablename__ = "jobs"
    # One job per Idempotency-Key and route: a second request with the key finds the first's job.
    __table_args__ = (UniqueConstraint("route", "idempotency_key", name="uq_jobs_route_idempotency_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    params: Mapped[dict] = mapped_column(JSON)
    # {"done": 1, "total": 3, "themes": ["tech"]}: the themes in the order they finished.
    progress: Mapped[dict] = mapped_column(JSON)
    result: Mapped[dict | None] = mapped_column(JSON, default=None)
    error: Mapped[dict | None] = mapped_column(JSON, default=None)
    http_status: Mapped[int | None] = mapped_column(Integer, default=None)
    headers: Mapped[dict | None] = mapped_column(JSON, default=None)  # of the answer, e.g. Retry-After
    route: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(128), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the kind and effective parameters
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)  # of the idempotency key
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)  # host:pid of the runner
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    def to_dict(self) -> dict[str, object]:
        url = f"/jobs/{self.id}"
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "params": self.params,
            "progress": {"done": self.progress.get("done", 0), "total": self.progress.get("total", 0)},
            "result": self.result,
            "error": self.error,
            "http_status": self.http_status,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "urls": {"get": url, "events": f"{url}/events", "cancel": url},
        }


class JobOutput(Base):
    """A row a job made, one per slot (a theme, or "achievement"): the primary key is what keeps a job that runs
    twice from saving twice, since the row and this link commit together or not at all."""

    __tablename__ = "job_outputs"

    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[str] = mapped_column(String(200), primary_key=True)
    storefront_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("storefronts.id", ondelete="CASCADE"), index=True, default=None)
    achievement_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("achievements.id", ondelete="CASCADE"), index=True, default=None)


class ProviderCall(Base):
    """One attempt at a provider call: who asked, how it went, what the vendor said and what it cost (the ledger)."""

    __tablename__ = "provider_calls"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    day: Mapped[str] = mapped_column(String(10), index=True)  # the UTC date, YYYY-MM-DD: what budgets and /usage use
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))  # image or text
    route: Mapped[str | None] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # ok, failed (answered with an error), no_answer, or cached (a picture reused: no vendor call, cost 0)
    outcome: Mapped[str] = mapped_column(String(20))
    status: Mapped[int | None] = mapped_column(Integer)  # the HTTP status, when there was one
    latency_ms: Mapped[float] = mapped_column(Float)
    credits: Mapped[float | None] = mapped_column(Float)  # vendor credits this attempt consumed
    remaining_credits: Mapped[int | None] = mapped_column(Integer)  # Clipdrop's x-remaining-credits
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)


class SharedCounter(Base):
    """One named number with its expiry (seconds since the epoch): a rate-limit window, a cool-down, credits."""

    __tablename__ = "shared_counters"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)
