"""The database: the engine, the session of each request, and the look-ups every route makes (or answers 404)."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
import weakref
from pathlib import Path

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.cpu import patched
from core.errors import NotFound, first_line
from models import Achievement, User

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 5


def open_engine(url: str) -> Engine:
    """make_engine, or for a DATABASE_URL SQLAlchemy cannot use (its form, its driver) a one-line SystemExit."""
    try:
        return make_engine(url)
    except (ArgumentError, ImportError) as error:
        raise SystemExit(f"DATABASE_URL is not a database URL this service can use: {first_line(error)}") from None


def safe_url(engine: Engine) -> str:
    """The engine's URL without its password."""
    return engine.url.render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets its folder, WAL and a busy timeout so several workers can share it."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # A commit writes the WAL without waiting for the disk (fsync at checkpoints): under gevent a commit's
            # fsync held every connection of the process, not only its own request. WAL with NORMAL never corrupts
            # the database; an OS crash may lose the last commits.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={WRITE_LOCK_WAIT_S * 1000}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        if patched():
            event.listen(engine, "before_cursor_execute", _take_the_write_lock_as_a_greenlet)
    else:  # a server that does not answer fails a connection within seconds, never hangs it (PostgreSQL's libpq)
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
        engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    _forget_pool_after_fork(engine)
    return engine


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
WRITE_LOCK_WAIT_S = 30


def _take_the_write_lock_as_a_greenlet(connection, cursor, statement, _parameters, _context, _executemany) -> None:
    """Under gevent, the first write of a transaction on SQLite takes the write lock here, yielding while another
    connection holds it. SQLite's own wait for it (busy_timeout) sleeps in C: it held every request of the worker,
    the writer it waited for included when that was a greenlet of the same worker, until the timeout."""
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection.in_transaction or not statement.lstrip()[:7].upper().startswith(_WRITES):
        return
    deadline, pause = time.monotonic() + WRITE_LOCK_WAIT_S, 0.001
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")  # the statement that follows finds the transaction open
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # gevent's: the other requests of the worker run meanwhile
            pause = min(2 * pause, 0.05)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={WRITE_LOCK_WAIT_S * 1000}")


def _forget_pool_after_fork(engine: Engine) -> None:
    """A forked child (gunicorn's preloaded workers, Celery's) drops the parent's pooled connections unclosed:
    sharing a socket across processes corrupts both sides' conversations with the database."""
    ref = weakref.ref(engine)

    def reset() -> None:
        if (alive := ref()) is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=reset)


def init_app(app: Flask, engine: Engine) -> None:
    """Give the app its engine and session factory, and close each request's session when the request ends."""
    app.extensions["engine"] = engine
    app.extensions["sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(close_session)


def get_session() -> Session:
    """The database session of this request, opened on first use."""
    if "db" not in g:
        g.db = current_app.extensions["sessionmaker"]()
    return g.db


def close_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def find_user(user_id: int, *, lock: bool = False, session: Session | None = None) -> User:
    """The user, or 404; `lock` holds the user's row until commit, so writes about one user take turns. In the
    request's session unless another is given (a job runs in sessions of its own)."""
    # FOR NO KEY UPDATE (PostgreSQL; SQLite locks on write anyway): it still lets other requests insert rows
    # that merely reference this user, such as an award.
    user = (session or get_session()).get(User, user_id, with_for_update={"key_share": True} if lock else None)
    if user is None:
        raise NotFound(f"No user has id {user_id}.", code="user_not_found")
    return user


def find_achievement(achievement_id: int) -> Achievement:
    """The achievement, or 404."""
    achievement = get_session().get(Achievement, achievement_id)
    if achievement is None:
        raise NotFound(f"No achievement has id {achievement_id}.", code="achievement_not_found")
    return achievement


def no_image(achievement_id: int) -> NotFound:
    """The 404 of an achievement that has no badge image."""
    return NotFound(f"Achievement {achievement_id} has no image.", code="achievement_not_found")


def find_themes(recommendations: dict[str, list[str]], shop_theme: str) -> list[str]:
    """The themes `shop_theme` names among the user's recommendations (`all`: every one, in the user's order);
    404 theme_not_found when it names one the user has none of."""
    themes = list(recommendations) if shop_theme == "all" else [shop_theme]
    if not themes or any(theme not in recommendations for theme in themes):
        raise NotFound("Mismatch of Themes", code="theme_not_found", field="shop_theme")
    return themes


def look_up(statement, **params) -> tuple | None:
    """The first row of a read-only statement, as a plain tuple, run straight on a pooled connection's cursor: on the
    PNG routes' hot path SQLAlchemy's connection and result objects cost twice the query itself (README,
    Benchmarks). A driver's error is raised as SQLAlchemy's, so it is answered like any other (503 when the
    database is down), and a connection the database dropped leaves the pool."""
    engine = current_app.extensions["engine"]
    sql, names = _driver_sql(engine.dialect, statement)
    dbapi_error = engine.dialect.loaded_dbapi.Error
    connection = None
    try:
        connection = engine.raw_connection()  # checked out (and pinged, where the engine pings) like any other
        cursor = connection.cursor()
        try:
            cursor.execute(sql, tuple(params[name] for name in names) if names is not None else params)
            return cursor.fetchone()
        finally:
            cursor.close()
    except dbapi_error as error:
        gone = connection is None or engine.dialect.is_disconnect(error, connection.dbapi_connection, None)
        if gone and connection is not None:
            connection.invalidate(error)
        raise DBAPIError.instance(sql, params, error, dbapi_error, connection_invalidated=gone) from error
    finally:
        if connection is not None:
            connection.close()


@functools.cache
def _driver_sql(dialect, statement) -> tuple[str, tuple[str, ...] | None]:
    """The statement as the driver takes it, and the order of its parameters when they are positional."""
    compiled = statement.compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup) if compiled.positiontup is not None else None


def status(engine: Engine) -> str:
    """'ok' when the database answers, else 'unreachable' (for /healthz)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        log.warning("health check: database unreachable (%s)", type(error).__name__)
        return "unreachable"
    return "ok"
