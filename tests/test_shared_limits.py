"""One count for the whole service: rate limits, cool-downs and credits shared by every process.

The storage is tested alone (many threads on one key, windows that expire under a frozen clock), then as users
meet it: the service started as `python main.py` with several gunicorn workers, on SQLite, PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
import time_machine
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from bench import vendor_stub
from conftest import generate_storefronts, postgres_base_url, postgres_schema
from core import shared_counters
from core.db import make_engine
from fakes import CLIPDROP_KEY, CLIPDROP_URL, STABILITY_CORE_URL, STABILITY_KEY, image_bytes
from serving import free_port, running, server_env

NO_REDIS = "TEST_REDIS_URL is not set: the Redis variant does not run"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip(NO_REDIS)
    return url


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


# --- the storage alone ------------------------------------------------------------------------------


def test_many_threads_on_one_key_each_get_their_own_count(engine):
    storage = storage_from_string(f"{shared_counters.DATABASE_SCHEME}://", engine=engine)
    with ThreadPoolExecutor(max_workers=16) as pool:
        counts = list(pool.map(lambda _: storage.incr("hits", 60), range(64)))
    assert sorted(counts) == list(range(1, 65))
    assert storage.get("hits") == 64


def test_a_window_starts_again_once_expired(engine):
    storage = shared_counters.DatabaseStorage(engine=engine)
    limiter = FixedWindowRateLimiter(storage)
    three = parse("3/minute")
    with time_machine.travel(T0, tick=False):
        assert [limiter.hit(three, "client") for _ in range(4)] == [True, True, True, False]
        assert storage.get_expiry(f"{three.key_for('client')}") == pytest.approx(T0.timestamp() + 60)
    with time_machine.travel(T0 + timedelta(seconds=61), tick=False):
        assert limiter.hit(three, "client")
        assert storage.get(three.key_for("client")) == 1
        storage.clear(three.key_for("client"))
        assert storage.get(three.key_for("client")) == 0
        assert storage.check()


def test_reset_removes_only_the_rate_limit_counts(engine):
    storage = shared_counters.DatabaseStorage(engine=engine)
    state = shared_counters.DatabaseState(engine)
    storage.incr("a", 60)
    storage.incr("b", 60)
    state.put("credits:clipdrop", 12)
    assert storage.reset() == 2
    assert (storage.get("a"), state.get("credits:clipdrop")) == (0, 12)


@pytest.fixture(params=["database", "redis"])
def make_state(request, engine):
    """A factory of shared states on one store: each call is what another process would open."""
    if request.param == "database":
        return lambda: shared_counters.shared_state(engine, None)
    url = redis_url()
    return lambda: shared_counters.shared_state(engine, url)


def test_shared_state_values_expire_and_claims_go_to_one(make_state):
    first, second = make_state(), make_state()
    name = f"test:{uuid.uuid4().hex}"
    with time_machine.travel(T0, tick=False):
        first.put(name, 5, ttl_s=30)
        assert second.get(name) == 5
        assert second.get(f"{name}:other") is None
        assert first.claim(f"{name}:once", 60)
        assert not second.claim(f"{name}:once", 60)
    if isinstance(first, shared_counters.DatabaseState):  # Redis expires keys on its own clock, not the frozen one
        with time_machine.travel(T0 + timedelta(seconds=31), tick=False):
            assert second.get(name) is None
        with time_machine.travel(T0 + timedelta(seconds=61), tick=False):
            assert second.claim(f"{name}:once", 60)


@pytest.mark.parametrize("store", ["database", "redis"])
def test_a_cool_down_learnt_in_one_process_is_kept_by_another(make_app, users, http, store):
    """Two apps on one database are two worker processes: the second skips the provider the first saw fail."""
    storage = {}
    if store == "redis":
        storage = {"RATELIMIT_STORAGE_URI": redis_url()}
        shared_counters.RedisState(redis_url()).redis.delete(shared_counters.RedisState.PREFIX + "cooldown:clipdrop")
    settings = {"CLIPDROP_API_KEY": CLIPDROP_KEY, "STABILITY_API_KEY": STABILITY_KEY, "PROVIDER_RETRIES": "0",
                "IMAGE_CACHE_TTL_S": "0", **storage}  # no cache: each request goes to the vendors
    first, second = make_app(**settings).test_client(), make_app(**settings).test_client()
    down = http.add(responses.POST, CLIPDROP_URL, status=500, json={"error": "down"})
    served = http.add(responses.POST, STABILITY_CORE_URL, body=image_bytes(), content_type="image/png")
    assert generate_storefronts(first, users[0]["id"]).status_code == 200
    assert (down.call_count, served.call_count) == (1, 1)
    assert generate_storefronts(second, users[0]["id"]).status_code == 200
    assert (down.call_count, served.call_count) == (1, 2)  # skipped: cooling down for every process


# --- the service for real: python main.py, several gunicorn workers ---------------------------------


def client_address() -> str:
    """A fresh client address per test, so no other run's count (in a shared Redis) is ever ours."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def hammer(server, requests_count: int) -> list[int]:
    """Many concurrent generation requests from one client; their statuses."""
    headers = {"X-Forwarded-For": client_address()}
    url = server.url("/gen-new-storefront-images?user_id=999999&shop_theme=tech")  # 404 at once, yet counted

    def post(_):
        return requests.post(url, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=requests_count) as pool:
        return list(pool.map(post, range(requests_count)))


def served_by(server, path: str) -> set[str]:
    """The worker processes whose log lines show they answered `path`."""
    return set(re.findall(rf"\[(\d+)\] \[INFO\] method=POST path={re.escape(path)} ", server.log()))


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def shared_service(request, tmp_path, sqlite_template):
    """A database URL and settings for `python main.py` with its shared counts on each kind of store."""
    if request.param == "postgresql":
        with postgres_schema(postgres_base_url()) as url:
            yield url, {}
        return
    path = tmp_path / "app.db"
    shutil.copyfile(sqlite_template, path)
    extra = {}
    if request.param == "redis":
        extra = {"RATELIMIT_STORAGE_URI": redis_url()}
        shared_counters.RedisState(redis_url()).redis.delete(shared_counters.RedisState.PREFIX + "cooldown:clipdrop")
    yield f"sqlite:///{path}", extra


@pytest.fixture(scope="module")
def stability_stub():
    stub = vendor_stub.start()
    yield stub
    stub.shutdown()
    stub.server_close()


def test_limits_and_cool_downs_hold_across_gunicorn_workers(tmp_path, shared_service, stability_stub):
    """The service as `python main.py` starts it, with Clipdrop down and Stability AI (a local stub) serving."""
    database_url, extra = shared_service
    env = server_env(tmp_path, database_url, WEB_CONCURRENCY="3", GENERATION_RATE_LIMIT="4/minute",
                     TRUSTED_PROXIES="1", PROVIDER_RETRIES="0", CLIPDROP_API_KEY=CLIPDROP_KEY,
                     CLIPDROP_API_URL=f"http://127.0.0.1:{free_port()}", STABILITY_API_KEY=STABILITY_KEY,
                     STABILITY_API_HOST=stability_stub.url, IMAGE_CACHE_TTL_S="0", **extra)
    before = stability_stub.calls["stability"]
    with running(env, tmp_path) as server:
        assert len(server.wait_for_log(r"Booting worker with pid", 3)) == 3
        # Many threads at the edge of the limit: exactly the limit gets through, whichever worker answers.
        statuses = hammer(server, 16)
        hammered_workers = served_by(server, "/gen-new-storefront-images")
        # Each generation from its own address (no limit): Clipdrop fails once, then every worker skips it.
        user = requests.post(server.url("/seed-specific"), timeout=10).json()["users"][0]["id"]
        url = server.url(f"/gen-new-storefront-images?user_id={user}&shop_theme=tech")
        made = [requests.post(url, headers={"X-Forwarded-For": client_address()}, timeout=60).status_code
                for _ in range(5)]
        usage = requests.get(server.url("/usage"), timeout=10).json()
    assert len(hammered_workers) > 1, "one worker took every request: nothing was shared"
    # Counted per worker, as before this storage, 12 got through (4 per worker).
    assert sorted(statuses) == [404] * 4 + [429] * 12, server.tail()
    assert made == [200] * 5
    assert {group["key"]: group["calls"] for group in usage["groups"]} == {"clipdrop": 1, "stability": 5}
    assert stability_stub.calls["stability"] - before == 5
