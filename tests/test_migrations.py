"""Alembic migrations: they build exactly the models' schema, start-up applies them, and racing processes agree."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from conftest import PRODUCTION_BADGES
from core import schema
from core.db import make_engine
from main import create_app
from models import Base
from serving import REPO


def schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_builds_the_models_schema(empty_database):
    schema.upgrade(empty_database)
    assert schema_differences(empty_database) == []
    engine = make_engine(empty_database)
    try:
        assert schema.current_revision(engine) == schema.head_revision()
    finally:
        engine.dispose()


def alembic_check(url: str, cwd) -> subprocess.CompletedProcess:
    """`alembic check` in a process of its own: autogenerate as the README's `alembic revision --autogenerate` runs
    it, seeing only the tables that `migrations/env.py` imports (in this process every module is imported)."""
    env = {"DATABASE_URL": url, "PATH": os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "check"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def test_autogenerate_proposes_nothing_at_head(empty_database, tmp_path):
    """Every table is in models.py and every migration matches it: autogenerate drops and adds nothing."""
    schema.upgrade(empty_database)
    result = alembic_check(empty_database, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_autogenerate_sees_a_table_the_models_lack(empty_database, tmp_path):
    """The check above can fail: a table at head that no model declares (as the ledger was, once) is proposed for
    dropping."""
    schema.upgrade(empty_database)
    engine = make_engine(empty_database)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE stray_ledger (id INTEGER PRIMARY KEY)"))
    finally:
        engine.dispose()
    result = alembic_check(empty_database, tmp_path)
    assert result.returncode != 0
    assert "remove_table" in result.stdout + result.stderr and "stray_ledger" in result.stdout + result.stderr


def test_an_empty_database_differs_from_the_models(empty_database):
    """The comparison above would see a missing table (so it can fail)."""
    assert schema_differences(empty_database)


def test_sqlite_tables_are_those_create_all_makes(tmp_path):
    """Same DDL, word for word (spaces around punctuation aside: SQLite appends an added column to the text as
    written): AUTOINCREMENT included, so SQLite never reuses a deleted id."""
    schema.upgrade(f"sqlite:///{tmp_path / 'migrated.db'}")
    created = create_engine(f"sqlite:///{tmp_path / 'created.db'}")
    Base.metadata.create_all(created)
    created.dispose()

    def ddl(name: str) -> dict[str, str]:
        with sqlite3.connect(tmp_path / name) as connection:
            rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version'")
            return {row_name: re.sub(r"\s*([(),])\s*", r"\1", " ".join((sql or "").split())) for row_name, sql in rows}

    migrated, expected = ddl("migrated.db"), ddl("created.db")
    assert migrated == expected
    assert "AUTOINCREMENT" in migrated["users"]


def test_downgrade_to_base_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    schema.upgrade(url)
    command.downgrade(schema.alembic_config(url), "base")
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        schema.upgrade(url)
        assert {"users", "storefronts", "achievements", "user_achievements"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_revisions_read_without_alembic_are_alembic_s(empty_database):
    """A server checks its database without importing Alembic: the head it reads from the migration files, and the
    revision it reads from the database, are the ones Alembic finds, at every step."""
    assert schema.head_revision() == ScriptDirectory.from_config(schema.alembic_config()).get_current_head()
    engine = make_engine(empty_database)
    config = schema.alembic_config(empty_database)

    def alembic_s() -> str | None:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    try:
        assert schema.current_revision(engine) is None is alembic_s()
        for step in ("0001", "0005", "head"):
            command.upgrade(config, step)
            assert schema.current_revision(engine) == alembic_s() is not None
        assert schema.current_revision(engine) == schema.head_revision()
    finally:
        engine.dispose()


def test_the_server_does_not_import_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    schema.upgrade(url)
    script = "import sys, main; main.create_app(); print('alembic' in sys.modules)"
    env = {**os.environ, "DATABASE_URL": url, "IMAGE_DIR": str(tmp_path / "images"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_development_start_up_upgrades(empty_database, tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": empty_database, "IMAGE_DIR": str(tmp_path / "images")})
    try:
        assert schema.current_revision(app.extensions["engine"]) == schema.head_revision()
        assert app.test_client().post("/seed-specific").status_code == 201
    finally:
        app.extensions["engine"].dispose()


def test_production_refuses_a_database_behind_the_code(empty_database, tmp_path):
    config = {"TESTING": True, "APP_ENV": "production", "ADMIN_TOKEN": "t", "CORS_ORIGINS": "https://shop.example",
              "DATABASE_URL": empty_database, "IMAGE_DIR": str(tmp_path / "images"),
              **PRODUCTION_BADGES}
    with pytest.raises(SystemExit, match="alembic upgrade head"):
        create_app(config)
    assert schema_differences(empty_database)  # production start-up never changes the schema itself

    schema.upgrade(empty_database)
    app = create_app(config)
    app.extensions["engine"].dispose()


def advisory_lock_waiters(url: str, application_name: str) -> int:
    """Connections named `application_name` waiting for an advisory lock (other runs may share the database)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.scalar(text(
                "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)"
                " WHERE locktype = 'advisory' AND NOT granted AND application_name = :name"),
                {"name": application_name})
    finally:
        engine.dispose()


def test_alembic_command_line_from_many_processes_at_once(empty_database, tmp_path):
    """The README's `alembic upgrade head`, by three processes that wait together: all succeed, one migrates."""
    application_name = f"migrating-{os.getpid()}"  # libpq names the three processes' connections by it
    env = {"DATABASE_URL": empty_database, "PATH": os.environ["PATH"], "PGAPPNAME": application_name}
    command_line = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"]
    with schema.locked_connection(empty_database):  # hold the lock until all three are queued behind it
        processes = [subprocess.Popen(command_line, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for _ in range(3)]
        seen = ["".join(iter_until(process.stdout, "taking the migration lock")) for process in processes]
        if empty_database.startswith("postgresql"):
            deadline = time.monotonic() + 60
            while advisory_lock_waiters(empty_database, application_name) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert advisory_lock_waiters(empty_database, application_name) == 3
    outputs = [before + process.communicate(timeout=120)[0] for before, process in zip(seen, processes, strict=True)]
    assert [process.returncode for process in processes] == [0] * 3, outputs
    assert sum("Running upgrade  -> 0001" in output for output in outputs) == 1, outputs
    assert schema_differences(empty_database) == []


def iter_until(stream, marker: str) -> Iterator[str]:
    """The lines of `stream` up to and including the first that holds `marker`."""
    for line in stream:
        yield line
        if marker in line:
            return
