"""Faults for real, against the production setup: `python main.py` (gunicorn) with APP_ENV=production on a private
PostgreSQL, a Celery worker started with the README's own command, and two private Redis servers (the broker, the
limit store). Each dependency is made unavailable while requests run (a server stopped, an images folder made
immutable with `chattr +i`): every answer is its documented 503 within its bound, `/healthz` names it, and once it
is back no row points to a missing file, no file is unknown to the store and no job is stuck.

Production's start-up checks are here too: a dependency that does not answer stops the server with one line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from conftest import (
    PRODUCTION_BADGES,
    SETTING_NAMES,
    TEST_JWT_KEY,
    TEST_SIGNING_KEY,
    assert_nothing_saved,
    immutable,
    wait_until,
)
from core import schema
from jobs.state import FINAL
from main import create_app
from models import Achievement, ImageCacheEntry, ImageFile, Job, Storefront
from s3_server import s3_bucket, s3_endpoint  # noqa: F401 - fixtures
from serving import REPO, free_port, running, server_env, stop

ADMIN = {"Authorization": "Bearer fault-admin"}
PG_BIN = Path(shutil.which("pg_ctl") or "/nonexistent").resolve().parent
# Faults of a Redis, a broker or a bucket are the same on either database: these run on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
QUEUE_BOUND_S = 5  # the contract: a request that finds the broker down answers within 5 s
BOUND_S = 5  # every other dependency down: answered as fast (connect timeouts of 2 s, see core/ and jobs/)


def as_postgres(*command: str) -> list[str]:
    """`command` as the postgres user when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own, on a free port, that a test can stop and start again."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), *args), check=True,
                       capture_output=True, timeout=60)

    def start(self) -> None:
        self.pg_ctl("-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")


@dataclass
class RedisServer:
    """A redis-server of our own, on a free port, that a test can stop and start again on the same port."""

    folder: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: self._pings(client), 10, f"redis-server on {self.port} did not start")

    @staticmethod
    def _pings(client) -> bool:
        try:
            return client.ping()
        except Exception:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("initdb and pg_ctl are not installed: the database faults do not run")
    folder = Path(tempfile.mkdtemp(prefix="faults-pg-"))  # not under pytest's 0700 folder: postgres must enter it
    try:
        shutil.chown(folder, "postgres") if os.geteuid() == 0 else None
        subprocess.run(as_postgres(str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U",
                                   "postgres", "--no-sync", "-E", "UTF8"), check=True, capture_output=True, timeout=120)
        server = PrivatePostgres(folder, free_port())
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def readme_celery_command() -> str:
    """The README's command that starts a Celery worker, as written in its code block."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    commands = [line.strip() for block in blocks for line in block.splitlines()
                if re.search(r"\bcelery -A \S+ worker\b", line) and not line.lstrip().startswith("#")]
    assert len(commands) == 1, commands
    return commands[0]


def shell_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a shell whose PATH has the venv's bin/ first, with every setting not given blank, so that a
    developer's `.env` in the repository (the README's command runs there) cannot add any."""
    venv_bin = str(Path(sys.executable).parent)
    shell = {name: "" for name in SETTING_NAMES if name != "PROMETHEUS_MULTIPROC_DIR"}
    shell.update(env)
    shell["PATH"] = f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    shell.pop("PYTHONPATH", None)  # the README's command needs none
    return shell


@dataclass
class Deployment:
    base: str
    postgres: PrivatePostgres
    broker: RedisServer
    limits: RedisServer
    images: Path
    worker_log: Path
    queue: str

    def url(self, path: str) -> str:
        return self.base + path

    def health(self) -> requests.Response:
        return requests.get(self.url("/healthz"), timeout=15)

    def healthy(self) -> bool:
        try:
            return self.health().status_code == 200
        except requests.RequestException:
            return False


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("faults")
    broker = RedisServer(folder, free_port())
    limits = RedisServer(folder, free_port())
    with private_postgres() as postgres:
        broker.start()
        limits.start()
        try:
            schema.upgrade(postgres.url)  # production expects `alembic upgrade head` as a deploy step
            queue = f"faults-{os.getpid()}"
            env = server_env(folder, postgres.url, APP_ENV="production", ADMIN_TOKEN="fault-admin",
                             CELERY_BROKER_URL=broker.url, CELERY_QUEUE=queue, RATELIMIT_STORAGE_URI=limits.url,
                             GENERATION_RATE_LIMIT="1000/minute", JOB_STALE_S="3", **PRODUCTION_BADGES,
                             IMAGE_CACHE_TTL_S="0")  # no cache entry keeps a file that delete-all must remove
            env["IMAGE_DIR"] = str(folder / "images")
            worker_log = folder / "worker.log"
            with open(worker_log, "wb") as log:
                worker = subprocess.Popen(["bash", "-c", readme_celery_command()], cwd=REPO,
                                          env=shell_env({**env, "PORT": ""}), stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            try:
                with running(env, folder) as server:
                    wait_until(lambda: "ready." in worker_log.read_text() or worker.poll() is not None, 60,
                               "the README's Celery worker did not start")
                    assert worker.poll() is None, worker_log.read_text()
                    yield Deployment(server.base_url, postgres, broker, limits, folder / "images", worker_log, queue)
            finally:
                stop(worker)
        finally:
            broker.stop()
            limits.stop()


def generate(deployment: Deployment, **headers: str) -> tuple[requests.Response, float]:
    """POST /gen-achievement-image for a product never asked before (so a new PNG, never one stored already)."""
    started = time.monotonic()
    response = requests.post(deployment.url("/gen-achievement-image"), timeout=60, headers=headers,
                             params={"date": "31 Oct", "product": f"soju {uuid.uuid4().hex[:8]}"})
    return response, time.monotonic() - started


def assert_unavailable(response, elapsed: float, code: str, bound: float = BOUND_S) -> None:
    """A 503 of `code` with Retry-After, answered within `bound` seconds (a requests or a Flask test response)."""
    body = response.json() if callable(response.json) else response.json
    assert response.status_code == 503, body
    assert body["code"] == code
    assert response.headers["Retry-After"]
    assert elapsed < bound, f"{code} took {elapsed:.1f} s"


def assert_health_names(deployment: Deployment, *names: str) -> None:
    response = deployment.health()
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == list(names)
    assert all(body["checks"][name] != "ok" for name in names)


def rows(deployment: Deployment, statement):
    engine = create_engine(deployment.postgres.url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(statement))
    finally:
        engine.dispose()


def stored_files(deployment: Deployment) -> set[str]:
    return {path.stem for path in deployment.images.rglob("*.png")}


def test_the_readme_s_celery_command_runs_the_jobs_on_celery_queue(deployment):
    assert f".> {deployment.queue}" in deployment.worker_log.read_text()  # CELERY_QUEUE names the queue
    response, _ = generate(deployment, Prefer="respond-async")
    assert response.status_code == 202
    job = wait_until(lambda: (body := requests.get(deployment.url(response.headers["Location"]), timeout=10).json())
                     ["status"] in FINAL and body, 60, "the worker did not run the job")
    assert job["status"] == "succeeded"
    assert "job " + job["id"] in deployment.worker_log.read_text()  # run by the README's worker


def test_limit_store_down_is_503_limits_unavailable(deployment):
    deployment.limits.stop()
    try:
        assert_unavailable(*generate(deployment), "limits_unavailable")
        # The jobs' notification channel is on that Redis too (RATELIMIT_STORAGE_URI): it is named with it.
        assert_health_names(deployment, "limit_store", "notification_channel")
    finally:
        deployment.limits.start()
    wait_until(deployment.healthy, 15, "/healthz did not recover with the limit store")
    assert generate(deployment, Prefer="wait=30")[0].status_code == 200


def test_broker_down_is_503_queue_unavailable_within_5_s(deployment):
    deployment.broker.stop()
    try:
        assert_unavailable(*generate(deployment, Prefer="respond-async"), "queue_unavailable", QUEUE_BOUND_S)
        assert_unavailable(*generate(deployment), "queue_unavailable", QUEUE_BOUND_S)
        assert_health_names(deployment, "broker")
        # The jobs the broker refused ended with that answer: none is left queued for nobody.
        assert not rows(deployment, select(Job.id).where(Job.status == "queued"))
    finally:
        deployment.broker.start()
    wait_until(deployment.healthy, 15, "/healthz did not recover with the broker")
    assert generate(deployment, Prefer="wait=30")[0].status_code == 200  # the worker reconnected


def test_image_store_refusing_writes_is_503_storage_unavailable(deployment):
    before = len(rows(deployment, select(Achievement.id)))
    folders = [deployment.images, *sorted(path for path in deployment.images.iterdir() if path.is_dir())]
    with immutable(*folders):
        assert_unavailable(*generate(deployment, Prefer="wait=30"), "storage_unavailable", 30)
        seeded = requests.post(deployment.url("/seedrandom"), json={"users": 1, "achievements": 1, "storefronts": 2},
                               headers=ADMIN, timeout=30)
        assert_unavailable(seeded, 0, "storage_unavailable", 30)
        assert_health_names(deployment, "image_dir")
    assert len(rows(deployment, select(Achievement.id))) == before  # nothing half-saved
    wait_until(deployment.healthy, 15, "/healthz did not recover with the image store")


def test_database_down_is_503_database_unavailable(deployment):
    for _ in range(3):  # jobs under way when the database goes: after it is back, each ends (the last test checks)
        assert generate(deployment, Prefer="respond-async")[0].status_code == 202
    deployment.postgres.stop()
    try:
        started = time.monotonic()
        listed = requests.get(deployment.url("/view-all-achievement"), timeout=30)
        assert_unavailable(listed, time.monotonic() - started, "database_unavailable")
        started = time.monotonic()  # the PNG routes look their row up on the driver's cursor, not in a session
        image = requests.get(deployment.url("/get-achievement-image"), params={"achievement_id": 1}, timeout=30)
        assert_unavailable(image, time.monotonic() - started, "database_unavailable")
        assert_unavailable(*generate(deployment), "database_unavailable")
        assert_health_names(deployment, "database")
    finally:
        deployment.postgres.start()
    wait_until(deployment.healthy, 15, "/healthz did not recover with the database")
    assert requests.get(deployment.url("/view-all-achievement"), timeout=10).status_code == 200


def test_delete_all_whose_file_removal_fails_answers_200_and_the_next_finishes(deployment):
    user = requests.post(deployment.url("/seed-specific"), headers=ADMIN, timeout=30).json()["users"][0]
    made = requests.post(deployment.url("/gen-new-storefront-images"), headers={"Prefer": "wait=30"}, timeout=60,
                         params={"user_id": user["id"], "shop_theme": "all"})
    assert made.status_code == 200
    hashes = {row.image_sha256 for row in rows(deployment, select(Storefront.image_sha256))}
    folders = {deployment.images / sha256[:2] for sha256 in hashes}
    with immutable(*folders):
        response = requests.delete(deployment.url("/delete-all-storefronts"), headers=ADMIN, timeout=30)
        assert response.status_code == 200
        body = response.json()
        assert body["deleted"] >= len(made.json()["storefronts"]) and body["files_left"] >= 1
    again = requests.delete(deployment.url("/delete-all-storefronts"), headers=ADMIN, timeout=30).json()
    assert (again["deleted"], again["files_left"]) == (0, 0)
    assert again["files_removed"] == body["files_left"]


def test_after_every_fault_files_rows_and_jobs_agree(deployment):
    """Runs last: after the faults above, no row points to a missing file, no file is unknown to the store, and no
    job is stuck (the sweeper and the worker end them within a few JOB_STALE_S)."""
    files = stored_files(deployment)
    columns = (Storefront.image_sha256, Achievement.image_sha256, Achievement.share_card_sha256,
               ImageCacheEntry.image_sha256)  # every row that keeps a file
    used = {row[0] for column in columns for row in rows(deployment, select(column).where(column.is_not(None)))}
    assert used <= files, "a row points to a missing file"
    assert files <= {row[0] for row in rows(deployment, select(ImageFile.sha256))}, "a file unknown to the store"
    wait_until(lambda: not rows(deployment, select(Job.id).where(Job.status.not_in(FINAL))), 30,
               "a job is stuck queued or running")
    assert rows(deployment, text("SELECT 1"))


# --- production's start-up checks ----------------------------------------------------------------


def start_production(tmp_path: Path, database_url: str, **settings: str) -> subprocess.CompletedProcess:
    env = server_env(tmp_path, database_url, APP_ENV="production", ADMIN_TOKEN="t", **PRODUCTION_BADGES)
    env.update(settings)
    return subprocess.run([sys.executable, str(REPO / "main.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def assert_one_line(result: subprocess.CompletedProcess, *names: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if any(name in line for name in names)]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_production_with_a_database_url_that_does_not_answer_says_so_in_one_line(tmp_path):
    result = start_production(tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres")
    assert "The database does not answer (DATABASE_URL=postgresql" in assert_one_line(result, "DATABASE_URL")


def test_a_setting_the_service_cannot_use_is_one_line_without_its_secret(tmp_path):
    result = start_production(tmp_path, "sqlite:///unused.db", RATELIMIT_STORAGE_URI="redsi://:pw-5ecret@cache:6379")
    assert "RATELIMIT_STORAGE_URI has the scheme 'redsi'" in assert_one_line(result, "RATELIMIT_STORAGE_URI")
    assert "pw-5ecret" not in result.stderr


def test_a_database_url_that_cannot_be_read_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        create_app({"TESTING": True, "DATABASE_URL": "postgres//not-a-url", "IMAGE_DIR": str(tmp_path)})
    assert str(stopped.value) == ("DATABASE_URL is not a database URL this service can use: Could not parse "
                                  "SQLAlchemy URL from given URL string")


def test_production_refuses_to_start_naming_each_dependency_that_does_not_answer(tmp_path, sqlite_template):
    shutil.copyfile(sqlite_template, tmp_path / "app.db")
    (tmp_path / "images").mkdir()
    with immutable(tmp_path / "images"):
        result = start_production(tmp_path, f"sqlite:///{tmp_path / 'app.db'}",
                                  CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
                                  RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0")
    line = assert_one_line(result, "does not start")
    for named in ("image store", "CELERY_BROKER_URL", "RATELIMIT_STORAGE_URI"):
        assert named in line
    assert "database" not in line


# --- in one process: a port nobody listens on ---------------------------------------------------


@SQLITE_ONLY
def test_fail_open_skips_the_limit_with_a_one_line_warning(make_app, caplog):
    client = make_app(RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0", GENERATION_RATE_LIMIT="1/minute",
                      RATELIMIT_FAIL_OPEN="1").test_client()
    for _ in range(2):  # over the limit: it is not counted while its store is down
        response = client.post("/gen-achievement-image", query_string={"date": "31 Oct", "product": "soju"})
        assert response.status_code == 200
    warnings = [record for record in caplog.records if "RATELIMIT_FAIL_OPEN=1" in record.getMessage()]
    assert len(warnings) == 2 and all(r.levelname == "WARNING" and not r.exc_info for r in warnings)
    health = client.get("/healthz")  # reported, but not failing: the service serves without the limit
    assert health.status_code == 200
    assert health.get_json()["checks"]["limit_store"] == "unreachable"
    assert health.get_json()["checks"]["notification_channel"] == "unreachable"  # it rides on that Redis


@SQLITE_ONLY
@pytest.mark.parametrize("broker", ["redis://127.0.0.1:{port}/0", "amqp://guest:guest@127.0.0.1:{port}//"])
def test_a_broker_nobody_listens_on_is_503_within_5_s_and_the_job_ends(make_app, broker):
    app = make_app(CELERY_BROKER_URL=broker.format(port=free_port()))
    client = app.test_client()
    started = time.monotonic()
    response = client.post("/gen-achievement-image", query_string={"date": "31 Oct", "product": "soju"},
                           headers={"Idempotency-Key": "k-1"})
    assert_unavailable(response, time.monotonic() - started, "queue_unavailable", QUEUE_BOUND_S)
    with app.extensions["sessionmaker"]() as session:
        job = session.scalars(select(Job)).one()
    assert (job.status, job.http_status, job.error["code"], job.idempotency_key) == (
        "failed", 503, "queue_unavailable", None)  # ended, and the client's retry with its key makes a new job
    assert client.get("/healthz").get_json()["failed"] == ["broker"]


def test_development_starts_and_warns_naming_what_does_not_answer(tmp_path, sqlite_template, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # no developer's .env
    shutil.copyfile(sqlite_template, tmp_path / "app.db")
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "IMAGE_DIR": str(tmp_path / "images"),
                      "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0", "BADGE_SIGNING_KEY": TEST_JWT_KEY,
                      "BADGE_DI_SIGNING_KEY": TEST_SIGNING_KEY})
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "starting" in r.getMessage()]
        assert warnings == ["starting all the same (development): the Celery broker is unreachable "
                            "(check CELERY_BROKER_URL)"]
    finally:
        app.extensions["jobs"].shutdown()
        app.extensions["engine"].dispose()


def test_a_generation_the_image_store_refused_leaves_nothing_and_its_key_may_be_retried(app, client):
    images = Path(app.extensions["settings"].image_dir)
    with immutable(images):
        refused = client.post("/gen-achievement-image", query_string={"date": "31 Oct", "product": "soju"},
                              headers={"Idempotency-Key": "k-2"})
        assert_unavailable(refused, 0, "storage_unavailable")
        assert client.get("/healthz").get_json()["failed"] == ["image_dir"]
    assert_nothing_saved(app)
    with app.extensions["sessionmaker"]() as session:  # no half-done store: no record of a file it never kept
        assert session.scalars(select(ImageFile)).all() == []
    again = client.post("/gen-achievement-image", query_string={"date": "31 Oct", "product": "soju"},
                        headers={"Idempotency-Key": "k-2"})  # a passing fault is not replayed: a new job
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert again.get_json()["job_id"] != refused.get_json()["job_id"]


@SQLITE_ONLY
@pytest.mark.parametrize("fault", ["no such bucket", "nobody listens"])
def test_a_bucket_that_refuses_or_does_not_answer_is_503(make_app, s3_endpoint, s3_bucket, fault):  # noqa: F811
    endpoint = s3_endpoint if fault == "no such bucket" else f"http://127.0.0.1:{free_port()}"
    app = make_app(IMAGE_STORE_URL=f"s3://{s3_bucket}-gone", S3_ENDPOINT_URL=endpoint)
    client = app.test_client()
    started = time.monotonic()
    response = client.post("/gen-achievement-image", query_string={"date": "31 Oct", "product": "soju"})
    assert_unavailable(response, time.monotonic() - started, "storage_unavailable")
    health = client.get("/healthz").get_json()
    assert (health["failed"], health["checks"]["image_dir"]) == (["image_dir"], "not_writable")
    assert_nothing_saved(app)
