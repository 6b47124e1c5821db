"""Waiting is free: under gunicorn's gevent workers, as `python main.py` runs them, a read answers while hundreds of
generations wait on the vendors, and clients that send their headers slowly neither block reads nor stay open; the
libraries the service talks through (psycopg, redis-py, requests, httpx2, SQLite) cooperate with gevent's patching.

Times here are generous bounds that only a blocked server would miss, never speed targets (bench/waiting.py measures).
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import postgres_base_url, wait_until
from fakes import CLIPDROP_KEY
from serving import REPO, Burst, running, send_one_more_byte, server_env, vendor_stub

GENERATIONS = 200
VENDOR_LATENCY_S = 4.0  # per call; an achievement is a text call, then an image call
SLOW_CLIENTS = 200
KEEPALIVE_S = 5  # gunicorn.conf.py: also the time a client gets to send its headers


@pytest.fixture(scope="module")
def server(tmp_path_factory, sqlite_template):
    """`python main.py` (gunicorn.conf.py as shipped: gevent workers) generating through a vendor stub that answers
    each call after VENDOR_LATENCY_S."""
    folder = tmp_path_factory.mktemp("waiting")
    shutil.copyfile(sqlite_template, folder / "app.db")
    with vendor_stub(VENDOR_LATENCY_S) as stub_url:
        env = server_env(folder, f"sqlite:///{folder / 'app.db'}", IMAGE_PROVIDER="clipdrop",
                         CLIPDROP_API_KEY=CLIPDROP_KEY, CLIPDROP_API_URL=stub_url, TEXT_PROVIDER="openai",
                         OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=f"{stub_url}/v1", PROVIDER_RETRIES="0",
                         IMAGE_CACHE_TTL_S="0")  # every generation waits on its own image call
        with running(env, folder) as live:
            live.stub_url = stub_url
            yield live


@pytest.mark.timeout(300)  # a machine loaded by the rest of the suite admits hundreds of generations slowly
def test_a_read_answers_while_hundreds_of_generations_wait(server):
    burst = Burst(server.base_url, "POST", "/gen-achievement-image?date=31%20Oct&product=soju", GENERATIONS,
                  timeout_s=280)
    # Once every generation has made its text call, all of them wait on the vendors: none can end before its image
    # call too, VENDOR_LATENCY_S later at the earliest.
    def reached() -> bool:  # or ended otherwise, which the assertions below report
        calls = requests.get(f"{server.stub_url}/stub/calls", timeout=10).json()["received"].get("openai", 0)
        return calls + len(burst.answers) >= GENERATIONS

    wait_until(reached, 200, "the generations did not all reach the vendor")
    read = requests.get(server.url("/view-all-achievement?limit=5"), timeout=60)
    read_at = time.monotonic() - burst.started
    health = requests.get(server.url("/healthz"), timeout=60)
    metrics = requests.get(server.url("/metrics"), timeout=60).text
    answers = burst.wait()
    assert read.status_code == 200 and health.status_code == 200
    waiting = sample(metrics, "requests_waiting_for_job")  # summed over both workers; a loaded machine may have
    assert GENERATIONS // 2 < waiting <= GENERATIONS  # let the first few end before the scrape
    assert sample(metrics, "http_open_connections") >= waiting + 1  # the scrape's own connection too
    assert sorted(status for status, _ in answers) == [200] * GENERATIONS, server.tail()
    # Answered while the generations waited on the vendors, not in a slot freed by one of them.
    assert read_at < min(seconds for _, seconds in answers), server.tail()
    listed = requests.get(server.url("/view-all-achievement"), timeout=60).json()["achievements"]
    assert len(listed) == GENERATIONS


def sample(metrics: str, name: str) -> float:
    """The value of the unlabelled sample `name` in a /metrics text."""
    return next(sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
                if sample.name == name)


def test_clients_sending_headers_slowly_neither_block_reads_nor_stay_open(server):
    selector = selectors.DefaultSelector()
    slow = []
    for _ in range(SLOW_CLIENTS):
        sock = socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])), timeout=10)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        slow.append(sock)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    try:
        started, sent, reads = time.monotonic(), 0, []
        closed: set[socket.socket] = set()
        while len(closed) < SLOW_CLIENTS and time.monotonic() - started < KEEPALIVE_S + 15:
            sent = send_one_more_byte(slow, request, sent, closed)
            if time.monotonic() - started < KEEPALIVE_S - 1:  # while every slow client is still held open
                reads.append(requests.get(server.url("/view-all-achievement?limit=1"), timeout=KEEPALIVE_S - 1))
            for key, _ in selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                assert not data.startswith(b"HTTP/1.1 200"), "a request with unfinished headers was answered"
                closed.add(key.fileobj)
                selector.unregister(key.fileobj)
        assert reads and all(read.status_code == 200 for read in reads)
        assert len(closed) == SLOW_CLIENTS, f"{SLOW_CLIENTS - len(closed)} slow clients still open"
    finally:
        for sock in slow:
            sock.close()
        selector.close()


def run_patched(*code: str, **env: str) -> str:
    """Run the `code` blocks in a Python process patched by gevent first, as the service's workers are; its stdout."""
    script = "from gevent import monkey\nmonkey.patch_all()\n" + "".join(textwrap.dedent(block) for block in code)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_psycopg_runs_queries_of_two_greenlets_at_once():
    """psycopg 3 (the pinned version) waits on a patched socket: two slow queries overlap, without psycogreen."""
    url = postgres_base_url().replace("postgresql+psycopg://", "postgresql://")
    out = run_patched("""
        import os, gevent, psycopg

        def timed():
            with psycopg.connect(os.environ["URL"]) as connection:
                return connection.execute(
                    "SELECT extract(epoch FROM clock_timestamp()), pg_sleep(1), extract(epoch FROM clock_timestamp())"
                ).fetchone()

        first, second = gevent.joinall([gevent.spawn(timed), gevent.spawn(timed)], raise_error=True)
        (start_a, _, end_a), (start_b, _, end_b) = first.value, second.value
        print(max(start_a, start_b) < min(end_a, end_b))
    """, URL=url)
    assert out.strip() == "True"  # each query started (server clock) before the other ended


SPANS = """
    import time, gevent

    def overlap(call):
        \"\"\"Whether two calls on two greenlets ran at once, each waiting its full second.\"\"\"
        def timed():
            started = time.monotonic()
            call()
            return started, time.monotonic()
        (a0, a1), (b0, b1) = (g.value for g in gevent.joinall([gevent.spawn(timed), gevent.spawn(timed)],
                                                                raise_error=True))
        return max(a0, b0) < min(a1, b1) and min(a1 - a0, b1 - b0) >= 0.9
"""


def test_http_clients_and_sqlite_work_with_gevent(stub):
    """requests and httpx2 (the OpenAI SDK's client) calls to a vendor overlap on patched sockets; SQLite works
    (its calls are short and local: they run on the loop)."""
    stub.latency_s = 1.0
    out = run_patched(SPANS, """
        import os, sqlite3, httpx2, requests

        url, call = os.environ["STUB"] + "/v1/chat/completions", {"model": "m", "messages": [{"role": "user"}]}
        headers = {"Authorization": "Bearer sk-test"}
        for name, client in (("requests", requests), ("httpx2", httpx2)):
            print(name, overlap(lambda: client.post(url, json=call, headers=headers, timeout=10).raise_for_status()))
        print("sqlite", sqlite3.connect(":memory:").execute("SELECT 1").fetchone() == (1,))
    """, STUB=stub.url)
    assert out.split() == ["requests", "True", "httpx2", "True", "sqlite", "True"]
    assert stub.calls["openai"] >= 4


def test_redis_waits_cooperate_with_gevent():
    """Two blocking Redis reads (BLPOP, one second) on two greenlets overlap."""
    redis_url = os.environ.get("TEST_REDIS_URL") or pytest.skip("TEST_REDIS_URL is not set: the Redis check is skipped")
    out = run_patched(SPANS, """
        import os, redis

        client = redis.Redis.from_url(os.environ["REDIS"])
        print(overlap(lambda: client.blpop(["futurepast-test-never-pushed"], timeout=1)))
    """, REDIS=redis_url)
    assert out.strip() == "True"
