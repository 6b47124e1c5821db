"""The exact-request image cache: a picture already paid for is reused, by every process, never drawn twice at once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import responses
import time_machine
from sqlalchemy import select

from conftest import count_rows, generate_achievement, image_files
from fakes import CLIPDROP_KEY, CLIPDROP_URL, image_bytes
from models import ImageCacheEntry, ProviderCall, Storefront, User

NO_CACHE = {"Cache-Control": "no-cache"}
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def make_clipdrop(make_app):
    """An app on Clipdrop (mocked by `http`), with three users who share the `tech` products of the first."""
    def build(**overrides):
        app = make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_RETRIES="0",
                       ADMIN_TOKEN="t", **overrides)
        with app.extensions["sessionmaker"]() as session:
            if session.scalar(select(User).limit(1)) is None:
                shelf = {"tech": ["mouse", "desktop", "monitor", "laptops"]}
                session.add_all([User(name="Ada", recommendations=shelf), User(name="Ben", recommendations=shelf),
                                 User(name="Cy", recommendations={"tech": ["mouse"]})])
                session.commit()
        return app

    return build


@pytest.fixture
def app(make_clipdrop):
    return make_clipdrop()


@pytest.fixture
def client(app):
    return app.test_client()


def clipdrop(http, delay_s: float = 0.0):
    """Clipdrop answering a distinct PNG for each call (after `delay_s`); the mock counts the calls."""
    calls = []

    def answer(request):
        calls.append(request)
        time.sleep(delay_s)
        return 200, {"x-credits-consumed": "1"}, image_bytes(colour=(len(calls) * 20 % 256, 120, 40))

    http.add_callback(responses.POST, CLIPDROP_URL, callback=answer, content_type="image/png")
    return calls


def generate_storefronts(client, user_id, fresh: str | None = None, **kwargs):
    """POST /gen-new-storefront-images of the user's `tech` shop, with `fresh` in the query string when given."""
    query = {"user_id": user_id, "shop_theme": "tech", **({"fresh": fresh} if fresh is not None else {})}
    return client.post("/gen-new-storefront-images", query_string=query, **kwargs)


def ledger(app) -> list[tuple[str, str, float]]:
    with app.extensions["sessionmaker"]() as session:
        return [(row.provider, row.outcome, row.cost_usd)
                for row in session.scalars(select(ProviderCall).order_by(ProviderCall.id))]


def usage(client) -> dict:
    return client.get("/usage", headers={"Authorization": "Bearer t"}).get_json()["total"]


def test_the_same_request_reuses_the_picture_with_no_vendor_call(client, app, http):
    calls = clipdrop(http)
    first = generate_storefronts(client, 1).get_json()["storefronts"][0]
    second = generate_storefronts(client, 2).get_json()["storefronts"][0]  # another user, same theme and products
    assert len(calls) == 1
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["image_src"] == first["image_src"]
    assert second["id"] != first["id"] and count_rows(app, Storefront) == 2
    assert len(image_files(app)) == 1
    assert client.get(second["image_url"]).data == client.get(first["image_src"]).data
    assert ledger(app) == [("clipdrop", "ok", 0.01), ("clipdrop", "cached", 0.0)]
    total = usage(client)
    assert (total["calls"], total["cached"], total["ok"], total["failed"], total["cost_usd"]) == (1, 1, 1, 0, 0.01)


def test_another_request_is_drawn(client, http):
    calls = clipdrop(http)
    generate_storefronts(client, 1)
    other = generate_storefronts(client, 3).get_json()["storefronts"][0]  # other products: another prompt
    assert len(calls) == 2 and other["cached"] is False


def test_a_badge_is_cached_too(client, app, http):
    calls = clipdrop(http)
    first, second = generate_achievement(client).get_json(), generate_achievement(client).get_json()
    assert len(calls) == 1
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["image_src"] == first["image_src"] and second["id"] != first["id"]


@pytest.mark.parametrize("ask", [{"headers": NO_CACHE}, {"fresh": "true"}, {"json": {"fresh": True}}],
                         ids=["no-cache", "fresh=true", "json"])
def test_no_cache_or_fresh_asks_for_a_new_picture(client, app, http, ask):
    calls = clipdrop(http)
    first = generate_storefronts(client, 1).get_json()["storefronts"][0]
    fresh = generate_storefronts(client, 2, **ask).get_json()["storefronts"][0]
    assert len(calls) == 2
    assert fresh["cached"] is False and fresh["image_src"] != first["image_src"]
    # The new picture is the cached one from now on; the old file stays for the row that shows it.
    again = generate_storefronts(client, 1, fresh="false").get_json()["storefronts"][0]
    assert len(calls) == 2 and again["cached"] is True and again["image_src"] == fresh["image_src"]
    assert len(image_files(app)) == 2


@pytest.mark.parametrize("value", ["yes", "2", "", "maybe"])
def test_fresh_must_be_true_or_false(client, value):
    response = generate_storefronts(client, 1, fresh=value)
    assert response.status_code == 400
    assert (response.get_json()["code"], response.get_json()["field"]) == ("invalid_parameter", "fresh")


def test_ttl_0_turns_the_cache_off(make_clipdrop, http):
    app = make_clipdrop(IMAGE_CACHE_TTL_S="0")
    calls = clipdrop(http)
    client = app.test_client()
    answers = [generate_storefronts(client, 1).get_json()["storefronts"][0] for _ in range(2)]
    assert len(calls) == 2 and [item["cached"] for item in answers] == [False, False]
    assert count_rows(app, ImageCacheEntry) == 0


def test_an_entry_past_its_ttl_is_drawn_again_and_purged_with_its_file(make_clipdrop, http):
    app = make_clipdrop(IMAGE_CACHE_TTL_S="3600")
    calls = clipdrop(http)
    client = app.test_client()
    with time_machine.travel(T0, tick=False):
        old = generate_storefronts(client, 1).get_json()["storefronts"][0]
    with time_machine.travel(T0 + timedelta(minutes=59), tick=False):
        assert generate_storefronts(client, 2).get_json()["storefronts"][0]["cached"] is True
    with time_machine.travel(T0 + timedelta(minutes=61), tick=False):
        new = generate_storefronts(client, 2).get_json()["storefronts"][0]
    assert len(calls) == 2 and new["cached"] is False and new["image_src"] != old["image_src"]
    client.delete("/delete-all-storefronts", headers={"Authorization": "Bearer t"})
    assert len(image_files(app)) == 1  # the new picture's: its entry still keeps it
    with time_machine.travel(T0 + timedelta(minutes=125), tick=False):
        app.extensions["jobs"].sweep()
    assert count_rows(app, ImageCacheEntry) == 0 and image_files(app) == set()


def test_deleting_rows_keeps_the_files_cache_entries_and_other_rows_use(client, app, http):
    calls = clipdrop(http)
    generate_storefronts(client, 1)
    generate_achievement(client)
    assert len(image_files(app)) == 2
    client.delete("/delete-all-storefronts", headers={"Authorization": "Bearer t"})
    assert len(image_files(app)) == 2  # the storefront's picture is still the cached one
    again = generate_storefronts(client, 2).get_json()["storefronts"][0]
    assert again["cached"] is True and client.get(again["image_url"]).status_code == 200
    assert len(calls) == 2
    # Past their TTL, the sweeper purges the entries, and the files that no row uses go with them.
    client.delete("/delete-all-storefronts", headers={"Authorization": "Bearer t"})
    with app.extensions["sessionmaker"]() as session:
        session.execute(ImageCacheEntry.__table__.update().values(created_at=T0 - timedelta(days=31)))
        session.commit()
    app.extensions["jobs"].sweep()
    assert count_rows(app, ImageCacheEntry) == 0
    achievement = client.get("/view-all-achievement").get_json()["achievements"][0]
    assert len(image_files(app)) == 1 and client.get(achievement["image_url"]).status_code == 200


def test_a_failed_call_caches_nothing_and_the_next_request_calls_again(client, app, http):
    http.add(responses.POST, CLIPDROP_URL, status=500, json={"error": "down"})
    assert generate_storefronts(client, 1).status_code == 502
    assert count_rows(app, ImageCacheEntry) == 0 and image_files(app) == set()
    calls = clipdrop(http)
    assert generate_storefronts(client, 1).get_json()["storefronts"][0]["cached"] is False
    assert len(calls) == 1


def test_identical_requests_at_the_same_moment_make_one_vendor_call(make_clipdrop, http):
    """Two apps on one database, as two processes or machines: four identical requests, one picture paid for."""
    calls = clipdrop(http, delay_s=0.5)
    apps = [make_clipdrop(), make_clipdrop()]
    answers, start = [], threading.Barrier(4)

    def ask(app, user_id):
        client = app.test_client()
        start.wait()
        answers.append(generate_storefronts(client, user_id).get_json()["storefronts"][0])

    threads = [threading.Thread(target=ask, args=(apps[i % 2], 1 + i % 2)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len({item["image_src"] for item in answers}) == 1
    assert sorted(item["cached"] for item in answers) == [False, True, True, True]
    assert sorted(outcome for _provider, outcome, _cost in ledger(apps[0])) == ["cached", "cached", "cached", "ok"]


def test_a_waiter_takes_over_when_the_claimer_fails(make_clipdrop, http):
    """The first request's call fails while an identical one waits: the waiter gets the key and calls itself."""
    answered = []

    def answer(request):
        answered.append(request)
        if len(answered) == 1:
            time.sleep(0.5)
            return 500, {}, b'{"error": "down"}'
        return 200, {}, image_bytes()

    http.add_callback(responses.POST, CLIPDROP_URL, callback=answer)
    app = make_clipdrop()
    answers, start = {}, threading.Barrier(2)

    def ask(user_id):
        client = app.test_client()
        start.wait()
        answers[user_id] = generate_storefronts(client, user_id)

    threads = [threading.Thread(target=ask, args=(user_id,)) for user_id in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed, served = sorted(answers.values(), key=lambda answer: -answer.status_code)  # whichever claimed first
    assert (failed.status_code, served.status_code) == (502, 200)
    assert served.get_json()["storefronts"][0]["cached"] is False
    assert len(answered) == 2
