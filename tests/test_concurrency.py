"""Many clients at once against several gunicorn workers: no lost update, no mixed set, no error, one job for one
Idempotency-Key, on both databases."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import DATABASES, postgres_base_url, postgres_schema
from fakes import CLIPDROP_KEY
from serving import running, server_env

CLIENTS = 16
ROUNDS = 3


@pytest.fixture(scope="module", params=DATABASES)
def server(request, tmp_path_factory, stub):
    """`python main.py` with three workers on a database of this module's own, its images from the vendor stub."""
    folder = tmp_path_factory.mktemp("concurrency")
    settings = {"IMAGE_PROVIDER": "clipdrop", "CLIPDROP_API_KEY": CLIPDROP_KEY, "CLIPDROP_API_URL": stub.url,
                "PROVIDER_RETRIES": "0", "IMAGE_CACHE_TTL_S": "0", "WEB_CONCURRENCY": "3"}
    if request.param == "sqlite":
        path = folder / "app.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        with running(server_env(folder, f"sqlite:///{path}", **settings), folder) as live:
            yield live
    else:
        with postgres_schema(postgres_base_url()) as url, running(server_env(folder, url, **settings),
                                                                  folder) as live:
            yield live


def all_at_once(calls: list) -> list[requests.Response]:
    """Run every call on its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def seed(server, achievements: int) -> tuple[int, list[int]]:
    """A new user and `achievements` new achievements; their ids."""
    user_id = requests.post(server.url("/seed-specific"), timeout=30).json()["users"][0]["id"]
    before = {a["id"] for a in requests.get(server.url("/view-all-achievement"), timeout=30).json()["achievements"]}
    made = requests.post(server.url("/seedrandom"), json={"users": 0, "achievements": achievements, "storefronts": 0},
                         timeout=60)
    assert made.status_code == 201
    after = requests.get(server.url("/view-all-achievement"), timeout=30).json()["achievements"]
    return user_id, sorted(a["id"] for a in after if a["id"] not in before)


def held(server, user_id: int) -> list[int]:
    response = requests.get(server.url(f"/view-all-achievement-user?user_id={user_id}"), timeout=30)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{server.tail()}"
    return [achievement["id"] for achievement in response.json()["achievements"]]


def award(server, user_id: int, achievement_id: int):
    """A call that awards the achievement to the user."""
    path = f"/add-achievement?user_id={user_id}&achievement_id={achievement_id}"
    return lambda: requests.post(server.url(path), timeout=60)


def assign(server, user_id: int, ids: list[int]):
    """A call that replaces the user's set with `ids`, passed in the query string as clients do."""
    path = f"/assign-achievements-to-user?user_id={user_id}&achievement_list={json.dumps(ids)}"
    return lambda: requests.post(server.url(path), timeout=60)


def test_award_from_many_clients_gives_one_link(server):
    for _ in range(ROUNDS):
        user_id, [achievement_id] = seed(server, 1)
        responses = all_at_once([award(server, user_id, achievement_id)] * CLIENTS)
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] * (CLIENTS - 1) + [201], server.tail()
        assert all("message" in response.json() for response in responses)
        assert held(server, user_id) == [achievement_id]


def test_concurrent_assigns_leave_one_requested_set(server):
    for _ in range(ROUNDS):
        user_id, ids = seed(server, 12)
        # Overlapping sets, so a mix of two would show, and a duplicate insert would fail.
        sets = [sorted({ids[i % 12], ids[(i + 1) % 12], ids[(i + 5) % 12]}) for i in range(CLIENTS)]
        responses = all_at_once([assign(server, user_id, ids) for ids in sets])
        assert [response.status_code for response in responses] == [200] * CLIENTS, server.tail()
        assert held(server, user_id) in sets


def test_awards_and_assigns_interleaved_never_fail(server):
    for _ in range(ROUNDS):
        user_id, ids = seed(server, 4)
        # Awards of ids the assigns also insert: an award landing inside an assign must not break it.
        calls = [award(server, user_id, ids[i % 4]) if i % 2 else assign(server, user_id, ids[i % 2:])
                 for i in range(CLIENTS)]
        responses = all_at_once(calls)
        assert all(response.status_code in (200, 201) for response in responses), server.tail()
        assert set(held(server, user_id)) <= set(ids)


def test_fifty_identical_requests_with_one_key_make_one_job_and_one_vendor_call(server, stub):
    """50 clients send the same generation with the same Idempotency-Key at once, spread over the workers: one job
    runs, the vendor is called once, and every client gets its answer."""
    stub.latency_s = 0.5
    before = stub.calls["clipdrop"]
    user_id = requests.post(server.url("/seed-specific"), timeout=30).json()["users"][0]["id"]
    path = f"/gen-new-storefront-images?user_id={user_id}&shop_theme=tech"
    key = {"Idempotency-Key": f"fifty-{user_id}"}
    responses = all_at_once([lambda: requests.post(server.url(path), headers=key, timeout=60)] * 50)
    assert [response.status_code for response in responses] == [200] * 50, server.tail()
    bodies = [response.json() for response in responses]
    assert all(body == bodies[0] for body in bodies)
    assert [item["style"] for item in bodies[0]["storefronts"]] == ["tech"]
    assert stub.calls["clipdrop"] - before == 1
    stored = requests.get(server.url(f"/get-all-user-storefront-image?user_id={user_id}"), timeout=30).json()
    assert [item["id"] for item in stored["storefronts"]] == [item["id"] for item in bodies[0]["storefronts"]]
