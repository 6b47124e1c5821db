"""The README's command-line examples (`.venv/bin/flask --app main ...`), run exactly as written from a shell in the
repository, in order, on a database and image folder of the test's own."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest
from moto.server import ThreadedMotoServer

from conftest import SETTING_NAMES
from s3_server import CREDENTIALS, object_keys, s3_client
from serving import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
# Where a README example points S3_ENDPOINT_URL (MinIO's usual address): the test serves S3 there when it is free.
S3_EXAMPLE_ENDPOINT = ("127.0.0.1", 9000)
S3_EXAMPLE_URL = "http://127.0.0.1:9000"


def readme_flask_commands() -> list[str]:
    """Every `.venv/bin/flask --app main ...` of the README, in code blocks or inline, with the settings written
    before it, without its comment; in the order of the README, each once."""
    found = re.findall(r"((?:[A-Z][A-Z0-9_]*=\S+ )*\.venv/bin/flask --app main [^`\n#]*)", README)
    commands = []
    for command in (command.strip() for command in found):
        placeholder = "<" in command or command.endswith("...")  # `<store URL>`, `...`: not an example
        if not placeholder and command not in commands:
            commands.append(command)
    return commands


def test_every_flask_example_names_the_venvs_flask():
    """A bare `flask` may be another one on PATH, without the service's packages."""
    assert re.findall(r"(?<!/bin/)\bflask --app", README) == []
    assert len(readme_flask_commands()) >= 5


def port_is_free(address: tuple[str, int]) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


@pytest.mark.timeout(600)  # the README's seedrandom makes 200 storefronts: a minute on a loaded machine
def test_the_readme_flask_commands_work_as_written(tmp_path):
    env = {name: "" for name in SETTING_NAMES if name != "PROMETHEUS_MULTIPROC_DIR"}  # nothing from a .env
    env.update({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
                "IMAGE_DIR": str(tmp_path / "images"), "IMAGE_PROVIDER": "local", "TEXT_PROVIDER": "local",
                **CREDENTIALS})
    s3, not_run = None, []
    if port_is_free(S3_EXAMPLE_ENDPOINT):
        s3 = ThreadedMotoServer(ip_address=S3_EXAMPLE_ENDPOINT[0], port=S3_EXAMPLE_ENDPOINT[1], verbose=False)
        s3.start()
    try:
        for command in readme_flask_commands():
            bucket = re.search(r"s3://([^/\s]+)", command)
            if bucket and s3 is None:
                not_run.append(command)
                continue
            if bucket:
                s3_client(S3_EXAMPLE_URL).create_bucket(Bucket=bucket[1])
            result = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
            if "seedrandom" in command:
                assert result.stdout.strip() == "Seeded 100 users, 50 achievements, 200 storefronts."
            if bucket:
                keys = object_keys(S3_EXAMPLE_URL, bucket[1])
                assert len(keys) == len(list((tmp_path / "images").rglob("*.png"))) > 0
    finally:
        if s3 is not None:
            s3.stop()
    if not_run:
        pytest.skip(f"port {S3_EXAMPLE_ENDPOINT[1]} is taken, so S3 could not be served there for: {not_run}")
