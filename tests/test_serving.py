"""Serving for real: gunicorn.conf.py, `python main.py` under gunicorn or Werkzeug, metrics summed over workers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from core.settings import Settings
from ops.serving import startup_line
from serving import REPO, running, server_env


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    path = tmp_path / "app.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def gunicorn_config(tmp_path, **settings: str) -> dict:
    """The values of gunicorn.conf.py as gunicorn loads it, under these settings, read in a process of its own: the
    file patches the standard library for gevent, which this one must not be."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("TEST_", "SENDFILE"))}
    env.update(settings, PROMETHEUS_MULTIPROC_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    script = ("import json, sys; from gunicorn.config import Config; c = Config(); "
              "from gunicorn.app.base import Application; "
              "[c.set(k, v) for k, v in Application.get_config_from_filename(None, sys.argv[1]).items() "
              "if k in c.settings]; "
              "print(json.dumps({**{k: getattr(c, k) for k in ('bind', 'worker_class_str', 'workers', "
              "'worker_connections', 'timeout', 'graceful_timeout', 'keepalive', 'sendfile', 'preload_app')}, "
              "'socket_sendfile': __import__('gevent.socket').socket.socket.sendfile.__module__}))")
    result = subprocess.run([sys.executable, "-c", script, str(REPO / "gunicorn.conf.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)  # cwd: no developer's .env
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_gunicorn_config_serves_connections_on_greenlets(tmp_path):
    config = gunicorn_config(tmp_path, HOST="0.0.0.0", PORT="8080", WEB_CONCURRENCY="3",
                             WORKER_CONNECTIONS="500", PROVIDER_TIMEOUT_S="60", PROVIDER_RETRIES="3")
    assert config["bind"] == ["0.0.0.0:8080"]
    assert config["worker_class_str"] == "gevent"
    assert (config["workers"], config["worker_connections"]) == (3, 500)
    provider_deadline = 60 * (3 + 1)  # one provider with every retry spent: a SIGTERM lets that finish
    assert config["graceful_timeout"] > provider_deadline
    assert config["sendfile"] is True
    assert config["socket_sendfile"] == "ops.gevent_sendfile"  # the kernel's, not gevent's read-and-send loop
    assert config["preload_app"] is True  # the master sets the metrics folder before it builds the app
    assert gunicorn_config(tmp_path)["worker_connections"] == 1000


def test_gunicorn_graceful_shutdown_follows_the_provider_settings(tmp_path):
    short = gunicorn_config(tmp_path, PROVIDER_TIMEOUT_S="5", PROVIDER_RETRIES="0")
    long = gunicorn_config(tmp_path, PROVIDER_TIMEOUT_S="120", PROVIDER_RETRIES="5")
    assert short["graceful_timeout"] < long["graceful_timeout"]
    assert long["graceful_timeout"] > 120 * 6


def test_python_main_serves_under_gunicorn(tmp_path, sqlite_url):
    with running(server_env(tmp_path, sqlite_url), tmp_path) as server:
        response = requests.get(server.url("/view-all-achievement"), headers={"X-Request-ID": "r-1"}, timeout=10)
        assert response.status_code == 200
        assert response.headers["Server"].startswith("gunicorn")
        assert response.headers["X-Request-ID"] == "r-1"
        assert len(server.wait_for_log(r"Booting worker with pid", 2)) == 2  # WEB_CONCURRENCY
        assert_startup_line(server, tmp_path)
        log = server.log()
    assert "Using worker: gevent" in log
    assert re.search(r"method=GET path=/view-all-achievement status=200 duration_ms=\S+ request_id=r-1", log)


def test_python_main_with_flask_debug_runs_werkzeug(tmp_path, sqlite_url):
    env = server_env(tmp_path, sqlite_url, FLASK_DEBUG="1", PROMETHEUS_MULTIPROC_DIR="")  # empty: unset
    with running(env, tmp_path) as server:
        response = requests.get(server.url("/view-all-achievement"), timeout=10)
        assert response.status_code == 200
        assert response.headers["Server"].startswith("Werkzeug")
        assert_startup_line(server, tmp_path)
        metrics = requests.get(server.url("/metrics"), timeout=10).text
        assert requests_total(metrics, "/view-all-achievement", "200") == 1
    assert "Restarting with" in server.log()  # the reloader's child serves


def assert_startup_line(server, folder) -> None:
    """One line says where the service listens and what it runs on; its docs link works."""
    lines = server.wait_for_log(r"Serving on .*")
    assert len(lines) == 1, server.tail()
    line = lines[0]
    assert line.startswith(f"Serving on {server.base_url} (API docs: {server.base_url}/docs); "), line
    assert f"database sqlite:///{folder}/app.db; images in folder {folder}/images;" in line, line
    assert line.endswith("image providers local; text provider local; jobs in process (100 per worker)"), line
    docs = re.search(r"API docs: (\S+)\)", line).group(1)
    assert requests.get(docs, timeout=10).status_code == 200


def test_startup_line_names_the_stores_without_secrets():
    line = startup_line(Settings(
        database_url="postgresql+psycopg://shop:hunter2pw@db.internal:5432/shop", image_store_url="s3://badges/png",
        s3_endpoint_url="http://minio:s3cretpw@127.0.0.1:9000", clipdrop_api_key="cd-test-key",
        stability_api_key="sk-test-stability", openai_api_key="sk-test-openai",
        celery_broker_url="amqp://guest:rabbitpw@127.0.0.1:5672//",
    ), "http://0.0.0.0:8000")
    assert line == ("Serving on http://0.0.0.0:8000 (API docs: http://0.0.0.0:8000/docs); "
                    "database postgresql+psycopg://shop:***@db.internal:5432/shop; "
                    "images in s3://badges/png at http://minio:***@127.0.0.1:9000; "
                    "image providers clipdrop, stability; text provider openai; "
                    "jobs on Celery workers via amqp://guest:***@127.0.0.1:5672//")
    for secret in ("hunter2pw", "s3cretpw", "cd-test-key", "sk-test", "rabbitpw"):
        assert secret not in line


def test_production_refuses_to_start_on_an_empty_database(tmp_path):
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}", APP_ENV="production", ADMIN_TOKEN="t")
    result = subprocess.run([sys.executable, str(REPO / "main.py")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "alembic upgrade head" in result.stderr


def test_metrics_add_up_over_workers(tmp_path, sqlite_url):
    metrics_dir = tmp_path / "futurepast-metrics-test"  # the prefix gunicorn.conf.py removes on exit
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over from a previous run")
    env = server_env(tmp_path, sqlite_url, WEB_CONCURRENCY="3", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    with running(env, tmp_path) as server:
        user_id = requests.post(server.url("/seed-specific"), timeout=30).json()["users"][0]["id"]
        url = server.url(f"/get-recommendations?user_id={user_id}")
        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(lambda _: requests.get(url, timeout=30).status_code, range(60)))
        assert statuses == [200] * 60
        served_by = set(re.findall(r"\[(\d+)\] \[INFO\] method=GET path=/get-recommendations", server.log()))
        assert len(served_by) > 1, "one worker served everything: the sum over workers went untested"
        for _ in range(6):  # whichever worker answers, it reports every worker's count
            body = requests.get(server.url("/metrics"), timeout=10).text
            assert requests_total(body, "/get-recommendations", "200") == 60
    assert not metrics_dir.exists()


def requests_total(body: str, route: str, status: str) -> float:
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels == {"method": "GET", "route": route,
                                                                          "status": status}:
                return sample.value
    return 0.0


def test_readme_gunicorn_command(tmp_path, sqlite_url):
    """`gunicorn -c gunicorn.conf.py 'main:create_app()'`, as the README's deployment guide says."""
    command = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), "main:create_app()"]
    with running(server_env(tmp_path, sqlite_url), tmp_path, command) as server:
        assert requests.get(server.url("/healthz"), timeout=10).json()["status"] == "ok"
