"""Shared fixtures: an app on a temporary database and image folder, with no real provider keys.

Every test that uses `database_url` runs twice: on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set
(in a schema of this run's own, emptied before each test and dropped at the end).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

from core import schema
from core.settings import Settings
from jobs.state import FINAL
from main import create_app

# Hypothesis' per-example deadline is a timing assertion: on a loaded CI machine it fails correct code.
hypothesis_settings.register_profile("no-deadline", deadline=None)
hypothesis_settings.load_profile("no-deadline")

# Every setting the service reads, so a developer's environment never leaks into a test.
SETTING_NAMES = [
    "HOST", "PORT", "DATABASE_URL", "IMAGE_DIR", "ADMIN_TOKEN", "CORS_ORIGINS", "IMAGE_PROVIDER", "TEXT_PROVIDER",
    "CLIPDROP_API_KEY", "CLIPDROP_API_URL", "STABILITY_API_KEY", "STABILITY_API_HOST", "STABILITY_ENGINE",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "PROVIDER_TIMEOUT_S", "PROVIDER_RETRIES",
    "PROVIDER_COOLDOWN_S", "CLIPDROP_MAX_IN_FLIGHT", "STABILITY_MAX_IN_FLIGHT", "OPENAI_MAX_IN_FLIGHT",
    "PROVIDER_LEASE_S", "MAX_REQUEST_BYTES", "GENERATION_RATE_LIMIT", "VERIFY_RATE_LIMIT", "RATELIMIT_STORAGE_URI",
    "APP_ENV",
    "WEB_CONCURRENCY", "WORKER_CONNECTIONS", "TRUSTED_PROXIES", "PROMETHEUS_MULTIPROC_DIR", "FLASK_DEBUG",
    "JOB_WORKERS", "JOB_STALE_S", "CELERY_BROKER_URL", "IDEMPOTENCY_TTL_S", "SSE_MAX_S", "GENERATION_BUDGET_USD",
    "IMAGE_CACHE_TTL_S", "IMAGE_STORE_URL", "S3_ENDPOINT_URL", "IMAGE_PUBLIC_BASE_URL", "IMAGE_URL_TTL_S",
    "BADGE_SIGNING_KEY", "BADGE_DI_SIGNING_KEY", "BADGE_ISSUER_NAME", "BADGE_ISSUER_URL", "PUBLIC_BASE_URL",
    "TRUSTED_HOSTS",
    "PRICE_CLIPDROP_CREDIT_USD",
    "RATELIMIT_FAIL_OPEN", "CELERY_QUEUE", "JOB_RETENTION_DAYS",
    "PRICE_STABILITY_CREDIT_USD", "PRICE_OPENAI_INPUT_PER_MTOK_USD", "PRICE_OPENAI_OUTPUT_PER_MTOK_USD",
]

def private_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# Throwaway keys, made once per run: an RSA key for VC-JWTs (what development makes, without the ~0.1 s of making
# one for each app), and an Ed25519 key, as Data Integrity key or as the VC-JWT key of the earlier form.
TEST_JWT_KEY = private_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
TEST_SIGNING_KEY = private_pem(Ed25519PrivateKey.generate())
# What APP_ENV=production refuses to start without, besides ADMIN_TOKEN.
PRODUCTION_BADGES = {"BADGE_SIGNING_KEY": TEST_JWT_KEY, "BADGE_DI_SIGNING_KEY": TEST_SIGNING_KEY,
                     "PUBLIC_BASE_URL": "https://badges.example"}
# Children first, so TRUNCATE's CASCADE has nothing left to find.
TABLES = ("job_outputs", "badge_credentials", "user_achievements", "storefronts", "achievements", "users",
          "images", "image_cache", "provider_calls", "shared_counters", "jobs")


class BufferedClient(FlaskClient):
    """A test client that reads every response whole, so file responses close their files."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


NO_POSTGRES = "TEST_DATABASE_URL is not set: the PostgreSQL variant does not run"
# A skip mark rather than a skip inside the fixture, so pytest folds the report into one line per file.
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skip(reason=NO_POSTGRES))
             if not os.environ.get("TEST_DATABASE_URL") else "postgresql"]


def postgres_base_url() -> str:
    """TEST_DATABASE_URL, or a skip that says it is not set."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip(NO_POSTGRES)
    return url


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A new, empty schema on `base_url`, as a URL whose connections use it; dropped afterwards."""
    schema = f"test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(base_url, poolclass=NullPool)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """An SQLite database at the latest migration, made once and copied for each test."""
    path = tmp_path_factory.mktemp("template") / "app.db"
    schema.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """This run's schema on TEST_DATABASE_URL, at the latest migration."""
    with postgres_schema(postgres_base_url()) as url:
        schema.upgrade(url)
        yield url


def empty_tables(url: str) -> None:
    """Delete every row and restart the ids, so each test starts from id 1 as on a new database."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL lock_timeout = '10s'")  # a leaked transaction fails, not hangs
            connection.exec_driver_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path) -> str:
    """This test's database: a fresh SQLite file, or this run's PostgreSQL schema emptied."""
    if request.param == "sqlite":
        path = tmp_path / "app.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    empty_tables(url)
    return url


@pytest.fixture(params=DATABASES)
def empty_database(request, tmp_path) -> Iterator[str]:
    """The URL of a database with no table at all (for a migration, or a server that migrates as it starts): an
    SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        with postgres_schema(postgres_base_url()) as url:
            yield url


@pytest.fixture
def make_app(tmp_path, database_url):
    """Build an app on this test's database and image folder; keyword arguments override settings."""
    built = []

    def build(**overrides):
        config = {"TESTING": True, "DATABASE_URL": database_url, "IMAGE_DIR": str(tmp_path / "images"),
                  "BADGE_SIGNING_KEY": TEST_JWT_KEY}  # BADGE_SIGNING_KEY=None: the development key
        config.update(overrides)
        app = create_app(config)
        app.test_client_class = BufferedClient
        built.append(app)
        return app

    yield build
    for app in built:  # finish the app's jobs; PostgreSQL keeps a connection per pooled slot: give them back
        app.extensions["jobs"].shutdown()
        app.extensions["engine"].dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def users(client) -> list[dict]:
    """The three demo users of /seed-specific."""
    response = client.post("/seed-specific")
    assert response.status_code == 201
    return response.get_json()["users"]


def png_size(data: bytes) -> tuple[int, int]:
    """The size of a PNG, after checking that it decodes."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def image_files(app) -> set[Path]:
    settings: Settings = app.extensions["settings"]
    return set(Path(settings.image_dir).rglob("*.png"))


def count_rows(app, model) -> int:
    from sqlalchemy import func, select

    with app.extensions["sessionmaker"]() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.fixture(scope="module")
def stub():
    """bench/vendor_stub.py on a loopback port: Clipdrop, Stability AI and OpenAI as they answer, after
    `stub.latency_s`, counting the calls they answered."""
    from bench import vendor_stub

    server = vendor_stub.start(latency_s=0.0)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def http():
    """Every `requests` call of the test goes to mocks registered here; an unused mock fails the test."""
    with responses.RequestsMock() as mock:
        yield mock


def post_together(app, url: str, headers: dict[str, str], count: int = 2) -> list:
    """`count` POSTs of `url` released at the same moment from threads of their own; their answers."""
    answers, start = [], threading.Barrier(count)

    def ask():
        client = app.test_client()
        start.wait()
        answers.append(client.post(url, headers=headers))

    threads = [threading.Thread(target=ask) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def generate_storefronts(client, user_id, theme="tech", **kwargs):
    """POST /gen-new-storefront-images for one user and theme; `kwargs` go to the client (headers=...)."""
    return client.post(f"/gen-new-storefront-images?user_id={user_id}&shop_theme={theme}", **kwargs)


def generate_achievement(client, date="31 Oct", product="soju", **kwargs):
    """POST /gen-achievement-image for one day and product; `kwargs` go to the client (headers=...)."""
    return client.post("/gen-achievement-image", query_string={"date": date, "product": product}, **kwargs)


@pytest.fixture
def achievement(client) -> dict:
    """An achievement made by the local providers, as /gen-achievement-image answers it."""
    response = generate_achievement(client)
    assert response.status_code == 200
    return response.get_json()


def wait_until(check, timeout: float, message: str):
    """What `check()` returns once it is truthy, polled every 50 ms; AssertionError with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(message)


def wait_for_job(client, job_id: str, statuses=FINAL, timeout: float = 60) -> dict:
    """The job from `GET /jobs/{id}` once its status is one of `statuses` (by default, once it has ended)."""
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)
    return wait_until(lambda: (job := client.get(f"/jobs/{job_id}").get_json())["status"] in statuses and job,
                      timeout, f"job {job_id} did not reach {sorted(statuses)} within {timeout} s")


def metric(client, name: str, **labels: str) -> float | None:
    """The value of the sample of /metrics with this name and exactly these labels, or None when it is absent."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@contextmanager
def immutable(*folders: Path) -> Iterator[None]:
    """The folders refuse new entries and removals (`chattr +i`: root ignores modes, not this), until the block ends;
    a skip that says why where chattr cannot do it (not root, a filesystem without the attribute)."""
    done = []
    try:
        for folder in folders:
            result = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"chattr +i does not work here: {result.stderr.strip()}")
            done.append(folder)
        yield
    finally:
        for folder in done:
            subprocess.run(["chattr", "-i", str(folder)], check=True)


def assert_nothing_saved(app):
    """No storefront or achievement row, and no image file."""
    from models import Achievement, Storefront

    assert count_rows(app, Storefront) == 0
    assert count_rows(app, Achievement) == 0
    assert image_files(app) == set()
