"""The schema migrations runner (Alembic; the migrations live in `migrations/`): upgrade to the latest revision under
a lock, or check that a database is at it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, event, inspect, text

from core.db import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
MIGRATIONS = ALEMBIC_INI.parent / "migrations" / "versions"
# Any fixed number: the PostgreSQL advisory lock that lets one process at a time migrate.
MIGRATION_LOCK_KEY = 7_046_112_031


def alembic_config(database_url: str | None = None) -> Config:
    """The Alembic configuration of this project; `database_url` wins over the environment."""
    # Alembic is imported only to migrate: checking a database needs none of it, and it is 11 MB in every server
    # process.
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    if database_url:
        config.attributes["database_url"] = database_url
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The latest revision of the migrations folder: the one that no other revises."""
    revisions, revised = set(), set()
    for path in MIGRATIONS.glob("*.py"):
        source = path.read_text()
        revisions.update(re.findall(r'^revision = "([^"]+)"$', source, re.MULTILINE))
        revised.update(re.findall(r'^down_revision = "([^"]+)"$', source, re.MULTILINE))
    (head,) = revisions - revised
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (the row Alembic keeps); None for an empty database."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(database_url: str) -> None:
    """Upgrade the database to the latest revision; safe when several processes start at once."""
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def prepare(engine: Engine, *, upgrade_allowed: bool) -> None:
    """Bring the database to the latest revision, or, when upgrading is not allowed, refuse an older one."""
    current = current_revision(engine)
    if current == head_revision():
        return
    if not upgrade_allowed:
        raise SystemExit(
            f"The database is at revision {current or 'none (empty)'}, this code needs {head_revision()}: "
            "run `alembic upgrade head` first (see the README, Deployment)."
        )
    upgrade(engine.url.render_as_string(hide_password=False))
    log.info("database upgraded from revision %s to %s", current or "none (empty)", head_revision())


@contextmanager
def locked_connection(database_url: str) -> Iterator[Connection]:
    """A connection inside a transaction that holds the migration lock until it ends."""
    engine = make_engine(database_url)
    if engine.dialect.name == "sqlite":
        # pysqlite would run DDL outside any transaction; BEGIN IMMEDIATE makes the migration one transaction
        # that holds SQLite's write lock, so a second process waits, then finds the work done.
        @event.listens_for(engine, "connect")
        def _manual_transactions(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    log.info("taking the migration lock")
    try:
        with engine.connect() as connection, connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            yield connection
    finally:
        engine.dispose()
