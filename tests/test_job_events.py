"""Job event streams pushed through the notification channel: `id:` on every event, `Last-Event-ID` resume,
`retry:`, the end after SSE_MAX_S, no query per stream while nothing happens, and a job run by another process
(`python main.py`) reaching a stream of this one through PostgreSQL NOTIFY, Redis pub/sub or SQLite's poll."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
import requests
from sqlalchemy import event

from conftest import metric, wait_until
from fakes import CLIPDROP_KEY
from jobs.notify import POLL_S, RedisChannel
from jobs.state import Progress, claim, finish, load
from models import Job
from serving import running, server_env
from test_jobs import parse_blocks

NO_REDIS = "TEST_REDIS_URL is not set: the Redis variant does not run"


def make_job(app, total: int = 3) -> str:
    """A queued storefronts job that no runner takes: the test moves it along as a runner would."""
    job = Job(id=str(uuid.uuid4()), kind="storefronts", status="queued", params={"user_id": 1, "shop_theme": "all"},
              route="/gen-new-storefront-images", progress={"done": 0, "total": total, "themes": []},
              fingerprint="0" * 64, attempts=0)
    with app.extensions["sessionmaker"]() as session:
        session.add(job)
        session.commit()
    return job.id


def run_job(app, job_id: str, themes=("tech", "food", "fashion")) -> None:
    """Claim the job, end each theme, and finish it, with the runner's own functions (each publishes its change)."""
    attempt = claim(app, job_id)
    progress = Progress(app, load(app, job_id), attempt)
    for theme in themes:
        progress.advance(theme)
    assert finish(app, job_id, attempt, status="succeeded", http_status=200, result={"job_id": job_id})


def assert_ran(ids: list[str]) -> None:
    """The ids of run_job's events after `0:queued`: its start (unless the stream read the row only once the job
    had ended: changes that come together are told together), each theme, and its end."""
    assert ids[-4:] == ["1:running", "2:running", "3:running", "3:succeeded"]
    assert ids[:-4] in ([], ["0:running"])


class Stream:
    """A client of `/jobs/{id}/events` reading in a thread of its own, keeping each block as it arrives."""

    def __init__(self, app, job_id: str, headers: dict | None = None) -> None:
        self.response = app.test_client().get(f"/jobs/{job_id}/events", headers=headers, buffered=False)
        self.blocks: list[dict[str, str]] = []
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        text = ""
        try:
            for chunk in self.response.response:
                text += chunk.decode()
                *done, text = text.split("\n\n")
                self.blocks.extend(parse_blocks("\n\n".join(done)))
        finally:
            self.ended.set()

    def events(self) -> list[dict[str, str]]:
        return [block for block in self.blocks if "event" in block]


@pytest.fixture
def app(make_app):
    return make_app(SSE_MAX_S="30")


def test_every_event_has_an_id_and_the_stream_says_how_soon_to_reconnect(app):
    job_id = make_job(app)
    stream = Stream(app, job_id)
    wait_until(lambda: stream.events(), 10, "no first event")
    run_job(app, job_id)
    assert stream.ended.wait(10)
    assert stream.response.status_code == 200
    assert stream.blocks[0] == {"retry": "1000"}
    events = stream.events()
    assert (events[0]["event"], events[0]["id"]) == ("status", "0:queued")
    assert_ran([block["id"] for block in events[1:]])
    assert [block["event"] for block in events[-4:]] == ["progress", "progress", "progress", "status"]
    assert json.loads(events[-1]["data"])["result"] == {"job_id": job_id}


def test_last_event_id_resumes_with_only_what_was_missed(app):
    job_id = make_job(app)
    run_job(app, job_id)
    client = app.test_client()

    def resumed(last_event_id: str) -> list[tuple[str, str]]:
        response = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": last_event_id})
        assert response.status_code == 200
        return [(block["event"], block["id"]) for block in parse_blocks(response.get_data(as_text=True))
                if "event" in block]

    assert resumed("1:running") == [("progress", "2:running"), ("progress", "3:running"),
                                    ("status", "3:succeeded")]
    assert resumed("0:queued") == [("progress", "1:running"), ("progress", "2:running"),
                                   ("progress", "3:running"), ("status", "3:succeeded")]
    assert resumed("3:running") == [("status", "3:succeeded")]
    # An id that is not one of ours starts afresh: where the job stands.
    assert resumed("nonsense") == [("status", "3:succeeded")]
    # The client saw the end: 204 tells EventSource to stop reconnecting.
    done = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "3:succeeded"})
    assert done.status_code == 204
    assert done.get_data() == b""


def test_a_resumed_stream_of_a_running_job_waits_for_what_comes_next(app):
    job_id = make_job(app)
    attempt = claim(app, job_id)
    progress = Progress(app, load(app, job_id), attempt)
    progress.advance("tech")
    stream = Stream(app, job_id, headers={"Last-Event-ID": "1:running"})
    wait_until(lambda: stream.blocks, 10, "the stream did not start")
    assert not stream.events()  # nothing was missed
    progress.advance("food")
    wait_until(lambda: stream.events(), 10, "the next theme did not arrive")
    assert [block["id"] for block in stream.events()] == ["2:running"]
    finish(app, job_id, attempt, status="failed", http_status=500, error={"code": "internal_error"})
    assert stream.ended.wait(10)
    assert [block["id"] for block in stream.events()] == ["2:running", "2:failed"]


def test_a_stream_ends_by_itself_after_sse_max_s(make_app):
    app = make_app(SSE_MAX_S="0.5")
    job_id = make_job(app)
    started = time.monotonic()
    stream = Stream(app, job_id)
    assert stream.ended.wait(10), "the stream did not end"
    assert time.monotonic() - started >= 0.4  # not before SSE_MAX_S
    assert [(block["event"], block["id"]) for block in stream.events()] == [("status", "0:queued")]
    # EventSource reconnects with the last id (here to another process, whose streams last longer); what happens
    # meanwhile arrives on the new stream.
    again = Stream(make_app(SSE_MAX_S="30"), job_id, headers={"Last-Event-ID": "0:queued"})
    wait_until(lambda: again.blocks, 10, "the stream did not start")
    run_job(app, job_id)
    assert again.ended.wait(10)
    assert_ran([block["id"] for block in again.events()])


@pytest.mark.parametrize("web_concurrency", ["1", None], ids=["one-process", "several-processes"])
def test_idle_streams_cost_no_query_each(make_app, database_url, web_concurrency):
    """Ten streams of a job that does not change: no query at all where a channel pushes changes (PostgreSQL, or
    SQLite in one process); on SQLite shared with other processes, one query per POLL_S for all of them together.
    A change then costs one read per stream."""
    overrides = {"SSE_MAX_S": "30"} | ({"WEB_CONCURRENCY": web_concurrency} if web_concurrency else {})
    app = make_app(**overrides)
    job_id = make_job(app)
    streams = [Stream(app, job_id) for _ in range(10)]
    wait_until(lambda: all(stream.events() for stream in streams), 10, "the streams did not start")
    assert metric(app.test_client(), "event_streams_open") == 10
    time.sleep(1.5 * POLL_S)  # SQLite's poll wakes each stream once when it first sees their job: the start's cost
    queries = []
    event.listen(app.extensions["engine"], "before_cursor_execute", lambda *args: queries.append(args[2]))
    time.sleep(2.5)
    idle = len(queries)
    polls = database_url.startswith("sqlite") and web_concurrency is None
    assert idle <= (2.5 / POLL_S + 1 if polls else 0), queries

    attempt = claim(app, job_id)
    wait_until(lambda: all(len(stream.events()) == 2 for stream in streams), 10, "the change did not arrive")
    reads = [query for query in queries[idle:] if query.lstrip().upper().startswith("SELECT") and "jobs" in query]
    assert len(reads) <= 10 + (1 if polls else 0)
    finish(app, job_id, attempt, status="canceled", http_status=409, error={"code": "job_canceled"})
    for stream in streams:
        assert stream.ended.wait(10)
    assert metric(app.test_client(), "event_streams_open") == 0


def test_a_request_that_waits_is_woken_by_the_change(app):
    job_id = make_job(app)
    from jobs.state import wait_for

    threading.Timer(0.3, run_job, args=(app, job_id)).start()
    started = time.monotonic()
    assert wait_for(app, job_id, 20).status == "succeeded"
    assert time.monotonic() - started < 10


# --- across processes ------------------------------------------------------------------------------------


def channel_settings(kind: str) -> dict[str, str]:
    if kind != "redis":
        return {}
    if not os.environ.get("TEST_REDIS_URL"):
        pytest.skip(NO_REDIS)
    return {"RATELIMIT_STORAGE_URI": os.environ["TEST_REDIS_URL"]}


@pytest.mark.parametrize("kind", ["database", "redis"])
def test_a_job_run_by_another_process_reaches_this_one_s_stream(make_app, database_url, tmp_path, stub, kind):
    """`python main.py` runs the job; the stream is served by this process: through PostgreSQL NOTIFY (or the poll
    on SQLite), or Redis pub/sub beside each database (PostgreSQL and Redis together is how production runs)."""
    stub.latency_s = 0.3
    settings = {"IMAGE_PROVIDER": "clipdrop", "CLIPDROP_API_KEY": CLIPDROP_KEY, "CLIPDROP_API_URL": stub.url,
                "PROVIDER_RETRIES": "0", **channel_settings(kind)}
    app = make_app(SSE_MAX_S="60", **settings)
    expected = {"redis": "redis", "database": "postgresql" if database_url.startswith("postgresql") else "sqlite"}
    assert app.extensions["job_channel"].kind == expected[kind]
    with running(server_env(tmp_path, database_url, WEB_CONCURRENCY="1", **settings), tmp_path) as server:
        user = requests.post(server.url("/seed-specific"), timeout=10).json()["users"][0]
        job = requests.post(server.url(f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=all"),
                            headers={"Prefer": "respond-async"}, timeout=10).json()
        stream = Stream(app, job["id"])
        assert stream.ended.wait(60), server.tail()
    ids = [block["id"] for block in stream.events()]
    assert ids[-1] == "3:succeeded"
    assert [block["event"] for block in stream.events()].count("progress") >= 1
    assert ids == sorted(set(ids), key=ids.index)  # no event twice


def test_the_channel_says_whether_it_carries_notifications(make_app, database_url):
    app = make_app()
    assert app.extensions["job_channel"].status() == "ok"
    assert app.extensions["job_channel"].ping()


def test_a_redis_channel_that_cannot_connect_says_so():
    from serving import free_port

    channel = RedisChannel(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert channel.status(timeout=0.5) == "unreachable"
        assert not channel.ping(timeout=0.1)
    finally:
        channel.close()
