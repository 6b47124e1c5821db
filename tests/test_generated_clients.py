"""Clients generated from openapi.json are whole: both generators read it without a warning, and the Python client
talks to a running service, success and error answers alike, as typed objects."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serving import REPO, running, server_env

CLIENTS = REPO / "clients"
PYTHON_CLIENT = "futurepast_client"
OPENAPI_TYPESCRIPT = CLIENTS / "node_modules" / ".bin" / "openapi-typescript"


def generate_python_client(folder: Path) -> subprocess.CompletedProcess:
    """openapi-python-client as README says, into `folder`; `--fail-on-warning` makes any warning a failure."""
    command = [sys.executable, "-c", "from openapi_python_client.cli import app; app()", "generate",
               "--path", str(REPO / "openapi.json"), "--config", str(CLIENTS / "openapi-python-client.yaml"),
               "--meta", "none", "--output-path", str(folder / PYTHON_CLIENT), "--fail-on-warning"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=folder)


@pytest.fixture(scope="module")
def client_module(tmp_path_factory):
    """The generated Python client package, imported from a temporary folder."""
    folder = tmp_path_factory.mktemp("generated")
    result = generate_python_client(folder)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PYTHON_CLIENT)
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PYTHON_CLIENT]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def service(tmp_path_factory, sqlite_template):
    """`python main.py` on a fresh SQLite database, with one worker."""
    folder = tmp_path_factory.mktemp("service")
    shutil.copyfile(sqlite_template, folder / "app.db")
    with running(server_env(folder, f"sqlite:///{folder}/app.db", WEB_CONCURRENCY="1"), folder) as server:
        yield server


def test_python_client_keeps_every_error_response(client_module):
    errors = importlib.import_module(f"{PYTHON_CLIENT}.api.achievements.view_achievement_image")
    parsed = errors._parse_response.__code__.co_names
    assert {"ErrorBadParameter", "ErrorAchievementNotFound", "ErrorPayloadTooLarge", "ErrorInternal"} <= set(parsed)


def test_python_client_reads_answers_as_typed_objects(client_module, service):
    api = importlib.import_module(f"{PYTHON_CLIENT}.api.achievements")
    models = importlib.import_module(f"{PYTHON_CLIENT}.models")
    for name in ("generate_achievement", "view_achievement_image", "get_achievement_image"):
        importlib.import_module(f"{api.__name__}.{name}")
    with client_module.Client(base_url=service.base_url, raise_on_unexpected_status=True) as client:
        made = api.generate_achievement.sync(client=client, date="31 Oct", product="soju")
        assert isinstance(made, models.GenerateAchievementResponse200), made
        assert made.achievement_name == "Spooky Soju Sipper" and made.occasion == "Halloween"

        viewed = api.view_achievement_image.sync(client=client, achievement_id=made.id)
        assert isinstance(viewed, models.ViewAchievementImageResponse200), viewed
        assert (viewed.name, viewed.description) == (made.achievement_name, made.description)
        assert viewed.created_at.tzinfo is not None  # a datetime, parsed by the client

        png = api.get_achievement_image.sync(client=client, achievement_id=made.id)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")  # the bytes of image/png

        missing = api.view_achievement_image.sync_detailed(client=client, achievement_id=made.id + 1000)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.ErrorAchievementNotFound), missing.parsed
        assert missing.parsed.code == models.ErrorAchievementNotFoundCode.ACHIEVEMENT_NOT_FOUND
        assert str(made.id + 1000) in missing.parsed.error


def test_openapi_typescript_reads_the_document_cleanly(tmp_path):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (.ci/run installs them)")
    if not OPENAPI_TYPESCRIPT.exists():
        pytest.skip("openapi-typescript is not installed: run `npm ci` in clients/ (.ci/run does)")
    output = tmp_path / "api.d.ts"
    result = subprocess.run([str(OPENAPI_TYPESCRIPT), str(REPO / "openapi.json"), "--output", str(output)],
                            capture_output=True, text=True, timeout=120, cwd=CLIENTS)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # where it would warn
    assert "warn" not in result.stdout.lower(), result.stdout
    types = output.read_text()
    assert 'code: "achievement_not_found";' in types
    assert 'code: "user_not_found" | "theme_not_found";' in types
    assert '"application/json": components["schemas"]["ErrorProviderBusy"];' in types
