"""Choosing providers, failing over, cooling down, shop_theme=all, concurrency, and nothing half-saved."""

from __future__ import annotations

import hashlib
import threading

import pytest
import requests
import responses
from sqlalchemy import event

from conftest import assert_nothing_saved, count_rows, generate_storefronts, image_files
from core.errors import ConfigError
from fakes import CLIPDROP_KEY, CLIPDROP_URL, STABILITY_CORE_URL, STABILITY_KEY, form_fields, image_bytes, png_text
from models import Storefront

PNG = {"body": image_bytes(), "content_type": "image/png"}
MODERATED = {"status": 403, "json": {"id": "1", "name": "content_moderation", "errors": ["flagged"]}}


@pytest.fixture
def make_client(make_app):
    def build(**overrides):
        # The image cache off: these tests repeat requests to watch each one reach the vendors.
        config = {"CLIPDROP_API_KEY": CLIPDROP_KEY, "STABILITY_API_KEY": STABILITY_KEY, "PROVIDER_RETRIES": "3",
                  "IMAGE_CACHE_TTL_S": "0", **overrides}
        client = make_app(**config).test_client()
        client.users = client.post("/seed-specific").get_json()["users"]
        return client

    return build


@pytest.fixture
def client(make_client):
    return make_client()


def generate(client, theme="tech", user=0):
    """Storefronts for the `user`-th demo user of this client."""
    return generate_storefronts(client, client.users[user]["id"], theme)


def stored_provider(client, response) -> str:
    return png_text(client.get(response.get_json()["storefronts"][0]["image_url"]).data)["provider"]


def failing(status=500):
    return {"status": status, "json": {"error": "down"}, "headers": {"Retry-After": "0"}}


def test_failover_after_the_retries_with_exact_calls(client, http):
    clipdrop = http.add(responses.POST, CLIPDROP_URL, **failing(500))
    stability = http.add(responses.POST, STABILITY_CORE_URL, **PNG)
    response = generate(client)
    assert response.status_code == 200
    assert (clipdrop.call_count, stability.call_count) == (4, 1)  # 1 + PROVIDER_RETRIES, then the other once
    assert stored_provider(client, response) == "stability"
    assert count_rows(client.application, Storefront) == 1


def test_a_failed_provider_cools_down_while_the_other_serves(client, http):
    clipdrop = http.add(responses.POST, CLIPDROP_URL, **failing(500))
    stability = http.add(responses.POST, STABILITY_CORE_URL, **PNG)
    generate(client)
    assert generate(client).status_code == 200
    assert generate(client, "food").status_code == 200
    assert (clipdrop.call_count, stability.call_count) == (4, 3)


def test_no_cooldown_when_it_is_zero(make_client, http):
    client = make_client(PROVIDER_COOLDOWN_S="0", PROVIDER_RETRIES="0")
    clipdrop = http.add(responses.POST, CLIPDROP_URL, **failing(500))
    stability = http.add(responses.POST, STABILITY_CORE_URL, **PNG)
    generate(client)
    generate(client)
    assert (clipdrop.call_count, stability.call_count) == (2, 2)


def test_a_cooling_provider_is_still_tried_when_the_other_fails(make_client, http):
    client = make_client(PROVIDER_RETRIES="0")
    http.add(responses.POST, CLIPDROP_URL, **failing(502))
    http.add(responses.POST, STABILITY_CORE_URL, **PNG)
    http.add(responses.POST, STABILITY_CORE_URL, **failing(500))
    http.add(responses.POST, CLIPDROP_URL, **PNG)
    assert stored_provider(client, generate(client)) == "stability"
    second = generate(client)  # stability first now; when it fails, clipdrop is the last resort
    assert second.status_code == 200
    assert stored_provider(client, second) == "clipdrop"
    assert [call.request.url for call in http.calls] == [CLIPDROP_URL, STABILITY_CORE_URL, STABILITY_CORE_URL,
                                                         CLIPDROP_URL]


@pytest.mark.parametrize(
    ("fault", "calls"),
    [
        (failing(401), 1), (failing(402), 1), (failing(403), 1), (failing(429), 2), (failing(503), 2),
        ({"body": requests.exceptions.ReadTimeout("timed out")}, 2),
        ({"body": requests.exceptions.ConnectionError("reset")}, 2),
        ({"body": b"<html>not an image</html>", "content_type": "image/png"}, 1),
    ],
    ids=["401", "402", "403", "429", "503", "timeout", "dropped", "not-an-image"],
)
def test_every_failure_but_a_rejected_prompt_fails_over(make_client, http, fault, calls):
    client = make_client(PROVIDER_RETRIES="1")
    clipdrop = http.add(responses.POST, CLIPDROP_URL, **fault)
    stability = http.add(responses.POST, STABILITY_CORE_URL, **PNG)
    response = generate(client)
    assert response.status_code == 200
    assert (clipdrop.call_count, stability.call_count) == (calls, 1)
    assert stored_provider(client, response) == "stability"


def test_a_rejected_prompt_never_fails_over(client, http):
    http.add(responses.POST, CLIPDROP_URL, status=400, json={"error": "bad request"})
    http.add(responses.POST, STABILITY_CORE_URL, **PNG)
    generate(client)  # clipdrop now cools down, so stability goes first
    http.add(responses.POST, STABILITY_CORE_URL, **MODERATED)
    response = generate(client, "food")
    assert response.status_code == 422
    assert (response.get_json()["code"], response.get_json()["provider"]) == ("content_rejected", "stability")
    assert [call.request.url for call in http.calls] == [CLIPDROP_URL, STABILITY_CORE_URL, STABILITY_CORE_URL]
    assert count_rows(client.application, Storefront) == 1


def test_a_named_provider_never_fails_over(make_client, http):
    client = make_client(IMAGE_PROVIDER="clipdrop")
    clipdrop = http.add(responses.POST, CLIPDROP_URL, **failing(500))
    response = generate(client)
    assert response.status_code == 502
    assert (response.get_json()["code"], response.get_json()["provider"]) == ("provider_error", "clipdrop")
    assert len(http.calls) == clipdrop.call_count == 4
    assert_nothing_saved(client.application)


def test_only_the_stability_key_uses_stability(make_app, http):
    client = make_app(STABILITY_API_KEY=STABILITY_KEY).test_client()
    client.users = client.post("/seed-specific").get_json()["users"]
    http.add(responses.POST, STABILITY_CORE_URL, **PNG)
    assert stored_provider(client, generate(client)) == "stability"


@pytest.mark.parametrize(
    ("clipdrop", "stability", "status", "code"),
    [(failing(500), failing(429), 503, "provider_busy"), (failing(429), failing(500), 502, "provider_error"),
     (failing(401), failing(402), 502, "provider_error")],
    ids=["last-rate-limited", "last-failed", "keys-refused"],
)
def test_exhausted_chain_answers_for_the_last_provider(make_client, http, clipdrop, stability, status, code):
    client = make_client(PROVIDER_RETRIES="1")
    http.add(responses.POST, CLIPDROP_URL, **clipdrop)
    http.add(responses.POST, STABILITY_CORE_URL, **stability)
    response = generate(client)
    assert response.status_code == status
    assert (response.get_json()["code"], response.get_json()["provider"]) == (code, "stability")
    assert ("Retry-After" in response.headers) == (status == 503)
    assert_nothing_saved(client.application)


def by_theme(replies: dict):
    """A provider stub whose answer depends on the shop theme in the prompt, each theme with its own picture."""

    def reply(request):
        prompt = form_fields(request)["prompt"]
        theme = next(theme for theme in replies if f"of a {theme} shop" in prompt)
        status = replies[theme]
        if status == 200:
            colour = tuple(hashlib.sha256(theme.encode()).digest()[:3])
            return 200, {"Content-Type": "image/png"}, image_bytes(colour=colour)
        if status == 403:
            return 403, {}, '{"name": "content_moderation", "errors": ["flagged"]}'
        return status, {"Retry-After": "0"}, '{"error": "failed"}'

    return reply


def test_all_themes_keeps_those_that_succeeded(make_client, http):
    client = make_client(CLIPDROP_API_KEY="", PROVIDER_RETRIES="1")
    http.add_callback(responses.POST, STABILITY_CORE_URL, callback=by_theme({"tech": 200, "food": 500,
                                                                            "fashion": 200}))
    response = generate(client, "all")
    assert response.status_code == 200
    body = response.get_json()
    assert [item["style"] for item in body["storefronts"]] == ["tech", "fashion"]
    assert body["errors"] == [{"theme": "food", "error": body["errors"][0]["error"], "code": "provider_error"}]
    assert count_rows(client.application, Storefront) == 2
    assert len(image_files(client.application)) == 2
    assert len(http.calls) == 1 + 2 + 1  # food was retried once


@pytest.mark.parametrize(
    ("replies", "status", "code"),
    [({"tech": 429, "food": 429, "fashion": 429}, 503, "provider_busy"),
     ({"tech": 403, "food": 403, "fashion": 403}, 422, "content_rejected"),
     ({"tech": 500, "food": 403, "fashion": 500}, 502, "provider_error")],
    ids=["all-busy", "all-rejected", "mixed"],
)
def test_all_themes_failing(make_client, http, replies, status, code):
    client = make_client(CLIPDROP_API_KEY="", PROVIDER_RETRIES="0")
    http.add_callback(responses.POST, STABILITY_CORE_URL, callback=by_theme(replies))
    response = generate(client, "all")
    assert response.status_code == status
    assert (response.get_json()["code"], response.get_json()["provider"]) == (code, "stability")
    assert_nothing_saved(client.application)


def test_themes_are_generated_concurrently(make_client, http):
    client = make_client(CLIPDROP_API_KEY="")
    # Opens only once all three themes are in flight at the same moment; one after another would break it.
    all_in_flight = threading.Barrier(3, timeout=10)

    def reply(request):
        all_in_flight.wait()
        return by_theme({"tech": 200, "food": 200, "fashion": 200})(request)

    http.add_callback(responses.POST, STABILITY_CORE_URL, callback=reply)
    response = generate(client, "all", user=1)
    assert response.status_code == 200, response.get_json()
    assert [item["style"] for item in response.get_json()["storefronts"]] == ["tech", "food", "fashion"]
    assert len(http.calls) == 3


def test_a_failed_database_write_removes_the_new_files(make_client, http):
    client = make_client(CLIPDROP_API_KEY="")
    http.add_callback(responses.POST, STABILITY_CORE_URL, callback=by_theme({"tech": 200, "food": 200,
                                                                            "fashion": 200}))
    engine = client.application.extensions["engine"]

    def refuse_storefronts(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO STOREFRONTS"):
            raise RuntimeError("the database went away")

    event.listen(engine, "before_cursor_execute", refuse_storefronts)
    try:
        response = generate(client, "all")
    finally:
        event.remove(engine, "before_cursor_execute", refuse_storefronts)
    assert response.status_code == 500
    assert response.get_json()["code"] == "internal_error"
    assert_nothing_saved(client.application)
    assert len(http.calls) == 3  # the pictures were made, then thrown away with the rows


@pytest.mark.parametrize(
    ("settings", "missing"),
    [({"IMAGE_PROVIDER": "clipdrop"}, "CLIPDROP_API_KEY"), ({"IMAGE_PROVIDER": "stability"}, "STABILITY_API_KEY"),
     ({"TEXT_PROVIDER": "openai"}, "OPENAI_API_KEY"),
     ({"IMAGE_PROVIDER": "stability", "CLIPDROP_API_KEY": CLIPDROP_KEY}, "STABILITY_API_KEY")],
)
def test_a_named_provider_without_its_key_stops_start_up(make_app, settings, missing):
    with pytest.raises(ConfigError, match=missing):
        make_app(**settings)
