"""Jobs run by real processes: Celery workers on Redis and RabbitMQ, and a killed runner (SIGKILL) in both kinds of
runner, whose job ends exactly once.

The Celery tests run once per broker of TEST_CELERY_BROKER_URL (a comma-separated list, e.g.
`redis://127.0.0.1:6379/14,amqp://guest:guest@127.0.0.1:5672//`); one worker process per broker serves the module.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from conftest import (
    BufferedClient,
    post_together,
    postgres_schema,
    wait_for_job,
    wait_until,
)
from core import schema
from fakes import CLIPDROP_KEY
from jobs.state import FINAL
from main import create_app
from models import Job, JobOutput
from serving import REPO, running, server_env, stop
from test_faults import readme_celery_command, shell_env

NO_BROKER = "TEST_CELERY_BROKER_URL is not set: the Celery worker tests do not run"
BROKERS = [url.strip() for url in os.environ.get("TEST_CELERY_BROKER_URL", "").split(",") if url.strip()]
BROKER_PARAMS = [pytest.param(url, id=url.split(":")[0]) for url in BROKERS] or [
    pytest.param(None, id="no-broker", marks=pytest.mark.skip(reason=NO_BROKER))]
STALE_S = "3"  # short, so a killed runner's job is taken over within the test
WORKER_START_S = 60


def provider_settings(stub) -> dict[str, str]:
    return {"IMAGE_PROVIDER": "clipdrop", "CLIPDROP_API_KEY": CLIPDROP_KEY, "CLIPDROP_API_URL": stub.url,
            "PROVIDER_RETRIES": "0", "JOB_STALE_S": STALE_S}


def job_row(database_url: str, job_id: str) -> Job:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(select(Job).where(Job.id == job_id)).first()
    finally:
        engine.dispose()


def outputs_of(database_url: str, job_id: str) -> int:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(JobOutput).where(JobOutput.job_id == job_id))
    finally:
        engine.dispose()


def runner_pid(database_url: str, job_id: str) -> int:
    """The pid of the process running the job, once it runs."""
    row = wait_until(lambda: (r := job_row(database_url, job_id)) is not None and r.status == "running" and r,
                     30, "the job never started")
    return int(row.worker.rpartition(":")[2])


# --- the in-process runner under gunicorn ------------------------------------------------------------


def test_a_killed_service_worker_s_job_is_run_again_once(tmp_path, stub, empty_database):
    stub.latency_s = 1.0
    database_url = empty_database
    env = server_env(tmp_path, database_url, WEB_CONCURRENCY="1", **provider_settings(stub))
    with running(env, tmp_path) as server:
        user = requests.post(server.url("/seed-specific"), timeout=10).json()["users"][0]
        answer = requests.post(server.url(f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=tech"),
                               headers={"Prefer": "respond-async"}, timeout=10)
        assert answer.status_code == 202
        job_id = answer.json()["id"]
        pid = runner_pid(database_url, job_id)
        assert pid != server.process.pid  # a gunicorn worker, not the master
        os.kill(pid, signal.SIGKILL)

        def ended():
            try:
                job = requests.get(server.url(f"/jobs/{job_id}"), timeout=5).json()
            except requests.RequestException:  # the master is starting a new worker
                return None
            return job if job["status"] in FINAL else None

        job = wait_until(ended, 60, f"the job did not end:\n{server.tail()}")
        files = list((tmp_path / "images").rglob("*.png"))

        # Under gunicorn's threads, the event stream arrives as the job goes, and ends with it.
        answer = requests.post(server.url(f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=all"),
                               headers={"Prefer": "respond-async"}, timeout=10)
        with requests.get(server.url(answer.json()["urls"]["events"]), stream=True, timeout=30) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            names = [line.split(": ", 1)[1] for line in stream.iter_lines(decode_unicode=True)
                     if line.startswith("event: ")]
        assert names[0] == "status" and names[-1] == "status"
        assert 1 <= names.count("progress") <= 3
    assert job["status"] == "succeeded", job
    assert [item["style"] for item in job["result"]["storefronts"]] == ["tech"]
    assert job_row(database_url, job_id).attempts == 2
    assert outputs_of(database_url, job_id) == 1
    assert len(files) == 1  # the killed run saved no file


# --- Celery workers --------------------------------------------------------------------------------


@dataclass
class CeleryService:
    app: object
    database_url: str
    folder: Path
    env: dict[str, str]
    log_path: Path
    worker: subprocess.Popen | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start_worker(self) -> None:
        """A Celery worker started by the README's own command, from a shell, once it is ready."""
        with open(self.log_path, "ab") as log_file:
            self.worker = subprocess.Popen(["bash", "-c", readme_celery_command()], cwd=REPO, env=self.env,
                                           stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        ready = self.log().count("ready.") + 1
        wait_until(lambda: self.log().count("ready.") >= ready or self.worker.poll() is not None, WORKER_START_S,
                   "the worker did not start")
        assert self.worker.poll() is None, self.log()


@contextmanager
def module_database(folder: Path) -> Iterator[str]:
    """A database for the module at the latest migration: a PostgreSQL schema when TEST_DATABASE_URL is set."""
    if os.environ.get("TEST_DATABASE_URL"):
        with postgres_schema(os.environ["TEST_DATABASE_URL"]) as url:
            schema.upgrade(url)
            yield url
    else:
        url = f"sqlite:///{folder / 'app.db'}"
        schema.upgrade(url)
        yield url


@pytest.fixture(scope="module", params=BROKER_PARAMS)
def celery_service(request, tmp_path_factory, stub) -> Iterator[CeleryService]:
    """The service (in this process) and a real Celery worker, started by the README's command (a gevent pool of
    100), on one broker and database."""
    broker = request.param
    folder = tmp_path_factory.mktemp("celery")
    with module_database(folder) as database_url:
        # The image cache off: the tests of this module's service count the vendor calls of requests they repeat.
        settings = {"DATABASE_URL": database_url, "IMAGE_DIR": str(folder / "images"), "CELERY_BROKER_URL": broker,
                    "IMAGE_CACHE_TTL_S": "0", "CELERY_QUEUE": f"jobs-processes-{os.getpid()}",
                    **provider_settings(stub)}
        app = create_app({"TESTING": True, "JOB_SWEEPER": True, **settings})
        app.test_client_class = BufferedClient
        app.extensions["celery"].control.purge()  # nothing left from an earlier run
        service = CeleryService(app, database_url, folder, shell_env(settings), folder / "worker.log")
        try:
            service.start_worker()
            yield service
        finally:
            if service.worker is not None:
                stop(service.worker)
            app.extensions["jobs"].shutdown()
            app.extensions["engine"].dispose()


@pytest.fixture
def service(celery_service, stub) -> CeleryService:
    stub.latency_s = 0.0
    stub.calls.clear()
    if celery_service.worker.poll() is not None:  # a test killed it
        celery_service.start_worker()
    return celery_service


def seed(client) -> dict:
    return client.post("/seed-specific").get_json()["users"][0]


def test_celery_runs_the_waiting_request_s_job(service):
    client = service.app.test_client()
    user = seed(client)
    response = client.post(f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=tech")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [item["style"] for item in body["storefronts"]] == ["tech"]
    row = job_row(service.database_url, body["job_id"])
    runner = int(row.worker.rpartition(":")[2])  # the worker's own process: its gevent pool runs jobs on greenlets
    assert runner != os.getpid() and "celery" in Path(f"/proc/{runner}/cmdline").read_text()
    image = client.get(body["storefronts"][0]["image_url"])
    assert image.status_code == 200
    assert image.mimetype == "image/png"


def test_celery_job_async_with_progress_events(service, stub):
    stub.latency_s = 0.3
    client = service.app.test_client()
    user = seed(client)
    accepted = client.post(f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=all",
                           headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202
    job_id = accepted.get_json()["id"]
    stream = client.get(f"/jobs/{job_id}/events").get_data(as_text=True)  # the worker's changes, through the channel
    assert stream.count("event: progress") >= 1
    assert "id: 3:succeeded\nevent: status" in stream
    assert '"status": "succeeded"' in stream.rsplit("event: status", 1)[1]
    job = client.get(f"/jobs/{job_id}").get_json()
    assert job["progress"] == {"done": 3, "total": 3}
    assert [item["style"] for item in job["result"]["storefronts"]] == ["tech", "food", "fashion"]


def test_celery_canceled_job_never_reaches_the_provider(service, stub):
    client = service.app.test_client()
    user = seed(client)
    celery, queue = service.app.extensions["celery"], service.app.extensions["settings"].celery_queue
    celery.control.cancel_consumer(queue, reply=True, timeout=10)  # the job's message waits on the broker
    try:
        queued = client.post(f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=fashion",
                             headers={"Prefer": "respond-async"}).get_json()["id"]
        canceled = client.delete(f"/jobs/{queued}")
        assert canceled.status_code == 200
        assert canceled.get_json()["status"] == "canceled"
    finally:
        celery.control.add_consumer(queue, reply=True, timeout=10)
    # The canceled job's message is consumed, and refused by the claim.
    wait_until(lambda: f"job {queued}: not claimed" in service.log(), 30, "the canceled job's message was not read")
    assert client.get(f"/jobs/{queued}").get_json()["status"] == "canceled"
    assert stub.calls["clipdrop"] == 0


def test_celery_two_concurrent_requests_with_one_key_make_one_call(service, stub):
    stub.latency_s = 0.5
    app = service.app
    user = seed(app.test_client())
    url = f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=tech"
    answers = post_together(app, url, {"Idempotency-Key": f"celery-{user['id']}"})
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].get_json() == answers[1].get_json()
    assert stub.calls["clipdrop"] == 1
    replay = app.test_client().post(url, headers={"Idempotency-Key": f"celery-{user['id']}"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == answers[0].get_json()
    assert stub.calls["clipdrop"] == 1


def test_celery_killed_worker_s_job_is_run_again_once(service, stub):
    """A worker killed mid-job (its gevent pool dies with it): the job runs again once, on the next worker."""
    stub.latency_s = 1.0
    client = service.app.test_client()
    user = seed(client)
    job_id = client.post(f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=tech",
                         headers={"Prefer": "respond-async"}).get_json()["id"]
    os.kill(runner_pid(service.database_url, job_id), signal.SIGKILL)
    service.worker.wait(timeout=10)
    service.start_worker()
    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert job_row(service.database_url, job_id).attempts == 2
    assert outputs_of(service.database_url, job_id) == 1
