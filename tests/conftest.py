"""Shared fixtures: an app on a temporary database and image folder, with no real provider keys."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from PIL import Image

from config import Settings
from main import create_app

# Every setting the service reads, so a developer's environment never leaks into a test.
SETTING_NAMES = [
    "HOST", "PORT", "DATABASE_URL", "IMAGE_DIR", "ADMIN_TOKEN", "CORS_ORIGINS", "IMAGE_PROVIDER", "TEXT_PROVIDER",
    "CLIPDROP_API_KEY", "CLIPDROP_API_URL", "STABILITY_API_KEY", "STABILITY_API_HOST", "STABILITY_ENGINE",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "PROVIDER_TIMEOUT_S", "PROVIDER_RETRIES",
    "PROVIDER_COOLDOWN_S", "MAX_REQUEST_BYTES", "GENERATION_RATE_LIMIT", "RATELIMIT_STORAGE_URI", "APP_ENV",
]


class BufferedClient(FlaskClient):
    """A test client that reads every response whole, so file responses close their files."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def make_app(tmp_path, database_url):
    """Build an app on this test's database and image folder; keyword arguments override settings."""

    def build(**overrides):
        config = {"TESTING": True, "DATABASE_URL": database_url, "IMAGE_DIR": str(tmp_path / "images")}
        config.update(overrides)
        app = create_app(config)
        app.test_client_class = BufferedClient
        return app

    return build


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
