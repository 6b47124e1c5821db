"""Provider caps (`<PROVIDER>_MAX_IN_FLIGHT`): the calls in flight to one vendor, counted by the vendor stub, never
exceed the cap, in one process or several (`python main.py` beside this one); a call over the cap waits and
succeeds; the slot of a killed process frees itself when its lease ends. On SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import requests

from conftest import metric, wait_for_job, wait_until
from core.errors import ConfigError
from core.provider_slots import ProviderSlots
from core.settings import Settings
from core.shared_counters import DatabaseState, RedisState
from fakes import CLIPDROP_KEY, OPENAI_KEY, STABILITY_KEY
from serving import REPO, running, server_env

NO_REDIS = "TEST_REDIS_URL is not set: the Redis variant does not run"
ASYNC = {"Prefer": "respond-async"}


def vendor_settings(stub, vendor: str, cap: int) -> dict[str, str]:
    """Settings that send `vendor`'s calls to the stub, capped at `cap` in flight."""
    common = {"PROVIDER_RETRIES": "0", f"{vendor.upper()}_MAX_IN_FLIGHT": str(cap), "IMAGE_CACHE_TTL_S": "0"}
    if vendor == "clipdrop":
        return {**common, "IMAGE_PROVIDER": "clipdrop", "CLIPDROP_API_KEY": CLIPDROP_KEY, "CLIPDROP_API_URL": stub.url}
    if vendor == "stability":
        return {**common, "IMAGE_PROVIDER": "stability", "STABILITY_API_KEY": STABILITY_KEY,
                "STABILITY_API_HOST": stub.url}
    return {**common, "TEXT_PROVIDER": "openai", "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{stub.url}/v1"}


@pytest.fixture
def vendor_stub(stub):
    stub.latency_s = 0.3
    for counts in (stub.calls, stub.most_in_flight):
        counts.clear()
    return stub


def redis_settings(store: str) -> dict[str, str]:
    if store != "redis":
        return {}
    if not os.environ.get("TEST_REDIS_URL"):
        pytest.skip(NO_REDIS)
    return {"RATELIMIT_STORAGE_URI": os.environ["TEST_REDIS_URL"]}


@pytest.fixture
def clean_redis_slots():
    """No slot left in TEST_REDIS_URL by an earlier run."""
    if os.environ.get("TEST_REDIS_URL"):
        client = RedisState(os.environ["TEST_REDIS_URL"]).redis
        for key in client.scan_iter(f"{RedisState.PREFIX}slot:*"):
            client.delete(key)


@pytest.mark.parametrize("vendor", ["clipdrop", "stability"])
def test_calls_over_the_cap_wait_for_a_slot_and_all_succeed(make_app, vendor_stub, vendor):
    app = make_app(**vendor_settings(vendor_stub, vendor, 2))
    client = app.test_client()
    jobs = [client.post("/gen-achievement-image", query_string={"date": "31 Oct", "product": f"soju {n}"},
                        headers=ASYNC).get_json()["id"] for n in range(5)]
    assert all(wait_for_job(client, job_id)["status"] == "succeeded" for job_id in jobs)
    assert vendor_stub.calls[vendor] == 5
    assert vendor_stub.most_in_flight[vendor] == 2
    assert metric(client, "provider_calls_in_flight", provider=vendor) == 0
    assert metric(client, "provider_calls_waiting", provider=vendor) == 0


def test_text_calls_over_the_openai_cap_wait_for_a_slot_and_all_succeed(make_app, vendor_stub):
    """Through the OpenAI SDK's own client: six achievements at once, OPENAI_MAX_IN_FLIGHT=2."""
    client = make_app(**vendor_settings(vendor_stub, "openai", 2)).test_client()
    jobs = [client.post("/gen-achievement-image", query_string={"date": "31 Oct", "product": f"soju {n}"},
                        headers=ASYNC).get_json()["id"] for n in range(6)]
    for job_id in jobs:
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded", job
        assert job["result"]["name"] == "Bench Champion"
    assert vendor_stub.calls["openai"] == 6
    assert vendor_stub.most_in_flight["openai"] == 2
    assert metric(client, "provider_calls_in_flight", provider="openai") == 0
    assert metric(client, "provider_calls_waiting", provider="openai") == 0


@pytest.mark.parametrize("store", ["database", "redis"])
def test_the_cap_holds_across_processes(make_app, database_url, tmp_path, vendor_stub, store, clean_redis_slots):
    """Two gunicorn workers of `python main.py` and this process share the cap of 2: the stub never works on more.
    The Redis store runs beside each database too: PostgreSQL and Redis together is how production runs."""
    vendor_stub.latency_s = 0.5
    settings = {**vendor_settings(vendor_stub, "clipdrop", 2), **redis_settings(store)}
    app = make_app(**settings)
    client = app.test_client()
    with running(server_env(tmp_path, database_url, WEB_CONCURRENCY="2", **settings), tmp_path) as server:
        user = requests.post(server.url("/seed-specific"), timeout=10).json()["users"][0]
        url = f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=all"
        theirs = [requests.post(server.url(url), headers=ASYNC, timeout=10).json()["id"] for _ in range(2)]
        wait_until(lambda: vendor_stub.in_flight["clipdrop"] == 2, 30, "the server's calls did not start")
        ours = client.post(url, headers=ASYNC).get_json()["id"]
        wait_until(lambda: (metric(client, "provider_calls_waiting", provider="clipdrop") or 0) >= 1, 10,
                   "this process's calls did not wait")
        for job_id in theirs + [ours]:
            assert wait_for_job(client, job_id)["status"] == "succeeded", server.tail()
    assert vendor_stub.calls["clipdrop"] == 9
    assert vendor_stub.most_in_flight["clipdrop"] == 2


HOLDER = """
import sys, time
from core.db import make_engine
from core.provider_slots import ProviderSlots
from core.shared_counters import shared_state

slots = ProviderSlots(shared_state(make_engine(sys.argv[1]), sys.argv[2] or None), {"clipdrop": 1}, 1.0)
with slots.hold("clipdrop"):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("store", ["database", "redis"])
def test_the_slot_of_a_killed_process_frees_itself_when_its_lease_ends(make_app, database_url, store,
                                                                       clean_redis_slots):
    if store == "redis" and database_url.startswith("postgresql"):
        pytest.skip("the Redis store runs once, on SQLite: the slots never touch the database")
    redis_url = redis_settings(store).get("RATELIMIT_STORAGE_URI", "")
    app = make_app()  # the database at the latest migration
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, database_url, redis_url], cwd=REPO,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline() == b"holding\n"
        state = RedisState(redis_url) if redis_url else DatabaseState(app.extensions["engine"])
        slots = ProviderSlots(state, {"clipdrop": 1}, 1.0)
        got = threading.Event()

        def call():
            with slots.hold("clipdrop"):
                got.set()

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert not got.wait(2.5), "the slot was taken while its holder lived and renewed its 1 s lease"
        os.kill(holder.pid, signal.SIGKILL)
        assert got.wait(10), "the killed process's slot never came free"
        caller.join(10)  # it gave the slot back
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()


def test_a_cap_is_a_whole_number_of_at_least_one():
    assert Settings.from_mapping({}).clipdrop_max_in_flight is None
    assert Settings.from_mapping({"OPENAI_MAX_IN_FLIGHT": "8"}).openai_max_in_flight == 8
    for value in ("0", "two", "1.5"):
        with pytest.raises(ConfigError, match="STABILITY_MAX_IN_FLIGHT"):
            Settings.from_mapping({"STABILITY_MAX_IN_FLIGHT": value})
    assert Settings.from_mapping({"PROVIDER_LEASE_S": "5"}).provider_lease_s == 5
