"""Clipdrop: the request we send, what we keep of its answer, and every fault leaving nothing behind."""

from __future__ import annotations

import base64
import logging

import pytest
import requests
import responses

import clipdrop_gen
from conftest import assert_nothing_saved, count_rows, generate_storefronts, png_size
from fakes import CLIPDROP_KEY, CLIPDROP_URL, form_fields, image_bytes, png_text, without_text_chunks
from models import Storefront


@pytest.fixture
def client(make_app):
    return make_app(CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_RETRIES="3").test_client()


@pytest.fixture
def app(client):
    return client.application


def test_storefront_from_clipdrop(client, app, users, http):
    sent = image_bytes((1024, 1024))
    http.add(responses.POST, CLIPDROP_URL, body=sent, content_type="image/png",
             headers={"x-remaining-credits": "97", "x-credits-consumed": "1"})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 200, response.get_json()

    [call] = http.calls
    assert call.request.url == CLIPDROP_URL
    assert call.request.headers["x-api-key"] == CLIPDROP_KEY
    assert "Authorization" not in call.request.headers
    assert call.request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    fields = form_fields(call.request)
    assert list(fields) == ["prompt"]
    assert "a mouse at the bottom left" in fields["prompt"]
    assert app.extensions["ledger"].credits("clipdrop") == 97  # shared with every process

    [made] = response.get_json()["storefronts"]
    stored = client.get(made["image_url"]).data
    assert png_size(stored) == (1024, 1024)
    provenance = png_text(stored)
    assert provenance["provider"] == "clipdrop"
    assert provenance["prompt"] == fields["prompt"]
    assert provenance["model"] == clipdrop_gen.MODEL
    assert "seed" not in provenance
    assert provenance["created"].endswith("+00:00")
    assert count_rows(app, Storefront) == 1


def test_badge_is_the_vendors_png_as_received(client, app, http):
    """Clipdrop's square picture is the badge: its bytes kept, never decoded and encoded again, provenance added."""
    sent = image_bytes((1024, 1024))
    http.add(responses.POST, CLIPDROP_URL, body=sent, content_type="image/png")
    response = client.post("/gen-achievement-image?date=31 Oct&product=soju")
    assert response.status_code == 200, response.get_json()
    badge = client.get(response.get_json()["image_url"]).data
    assert png_size(badge) == (1024, 1024)
    assert without_text_chunks(badge) == sent
    assert png_text(badge)["provider"] == "clipdrop"


def test_long_prompt_is_cut_at_a_word_to_1000_characters():
    prompt = "word " * 400
    clipped = clipdrop_gen.clip_prompt(prompt)
    assert len(clipped) <= 1000
    assert clipped.endswith("word")
    assert clipdrop_gen.clip_prompt("  short   prompt ") == "short prompt"


def test_429_then_200_is_retried(client, app, users, http, caplog):
    busy = http.add(responses.POST, CLIPDROP_URL, status=429, json={"error": "Too many requests"},
                    headers={"Retry-After": "0"})
    ok = http.add(responses.POST, CLIPDROP_URL, body=image_bytes(), content_type="image/png")
    with caplog.at_level(logging.WARNING):
        response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 200
    assert (busy.call_count, ok.call_count) == (1, 1)
    assert "clipdrop: HTTP 429; retry 1 of 3 in 0.00 s" in caplog.text  # Retry-After: 0, not the backoff
    assert count_rows(app, Storefront) == 1


def test_retry_after_beyond_the_deadline_is_not_waited_for(make_app, http):
    client = make_app(CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_TIMEOUT_S="5").test_client()
    users = client.post("/seed-specific").get_json()["users"]
    busy = http.add(responses.POST, CLIPDROP_URL, status=429, json={"error": "slow down"},
                    headers={"Retry-After": "120"})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 503
    assert response.get_json()["code"] == "provider_busy"
    assert response.get_json()["provider"] == "clipdrop"
    assert response.headers["Retry-After"] == "120"
    assert busy.call_count == 1
    assert_nothing_saved(client.application)


def test_still_rate_limited_after_retries_is_503(client, app, users, http):
    busy = http.add(responses.POST, CLIPDROP_URL, status=429, json={"error": "Too many requests"},
                    headers={"Retry-After": "0"})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 503
    body = response.get_json()
    assert (body["code"], body["provider"]) == ("provider_busy", "clipdrop")
    assert int(response.headers["Retry-After"]) >= 1
    assert busy.call_count == 4  # the first attempt and PROVIDER_RETRIES=3 retries
    assert_nothing_saved(app)


def test_5xx_until_retries_run_out_is_502(client, app, users, http):
    failing = http.add(responses.POST, CLIPDROP_URL, status=500, json={"error": "boom"}, headers={"Retry-After": "0"})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 502
    assert response.get_json()["code"] == "provider_error"
    assert response.get_json()["provider"] == "clipdrop"
    assert failing.call_count == 4
    assert_nothing_saved(app)


@pytest.mark.parametrize("fault", [requests.exceptions.ReadTimeout("read timed out"),
                                   requests.exceptions.ConnectionError("connection reset by peer"),
                                   requests.exceptions.ChunkedEncodingError("connection dropped mid-body")],
                         ids=["timeout", "connection-refused", "dropped-mid-body"])
def test_timeouts_and_dropped_connections_are_retried(make_app, http, fault):
    client = make_app(CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_RETRIES="1").test_client()
    users = client.post("/seed-specific").get_json()["users"]
    failing = http.add(responses.POST, CLIPDROP_URL, body=fault)
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 502
    assert (response.get_json()["code"], response.get_json()["provider"]) == ("provider_error", "clipdrop")
    assert failing.call_count == 2
    assert_nothing_saved(client.application)


def test_timeout_then_success(make_app, http):
    client = make_app(CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_RETRIES="1").test_client()
    users = client.post("/seed-specific").get_json()["users"]
    http.add(responses.POST, CLIPDROP_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    http.add(responses.POST, CLIPDROP_URL, body=image_bytes(), content_type="image/png")
    assert generate_storefronts(client, users[0]["id"]).status_code == 200
    assert len(http.calls) == 2


@pytest.mark.parametrize(("status", "words"), [(401, "API key"), (403, "API key"), (402, "credits"),
                                               (400, "refused the request")])
def test_other_4xx_is_not_retried(client, app, users, http, status, words):
    refused = http.add(responses.POST, CLIPDROP_URL, status=status, json={"error": "nope"})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 502
    body = response.get_json()
    assert (body["code"], body["provider"]) == ("provider_error", "clipdrop")
    assert words in body["error"]
    assert refused.call_count == 1
    assert_nothing_saved(app)


def test_out_of_credits_is_recorded(client, app, users, http):
    http.add(responses.POST, CLIPDROP_URL, status=402, json={"error": "no credits"})
    generate_storefronts(client, users[0]["id"])
    assert app.extensions["ledger"].credits("clipdrop") == 0


@pytest.mark.parametrize("body", [b'{"error": "oops"}', b"<html>gateway</html>", b"",
                                  b"\x89PNG\r\n\x1a\n truncated", b'<svg xmlns="http://www.w3.org/2000/svg"/>'],
                         ids=["json", "html", "empty", "broken-png", "svg"])
def test_bytes_that_are_not_an_image_are_never_stored(client, app, users, http, body):
    http.add(responses.POST, CLIPDROP_URL, body=body, content_type="image/png")
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 502
    assert response.get_json()["code"] == "provider_error"
    assert "not an image" in response.get_json()["error"]
    assert_nothing_saved(app)


def test_other_image_formats_become_png_of_the_right_size(client, users, http):
    http.add(responses.POST, CLIPDROP_URL, body=image_bytes((768, 512), "JPEG"), content_type="image/jpeg")
    response = generate_storefronts(client, users[0]["id"])
    item = client.get(f"/get-user-storefront-images?user_id={users[0]['id']}").get_json()["storefront_images"][0]
    assert response.status_code == 200
    assert png_size(base64.b64decode(item["storefront_image_binary"])) == (1024, 1024)


def test_the_key_is_never_in_an_answer_or_a_log_line(client, users, http, caplog):
    http.add(responses.POST, CLIPDROP_URL, status=403, json={"error": f"Invalid api key {CLIPDROP_KEY}"})
    http.add(responses.POST, CLIPDROP_URL, status=500, json={"error": CLIPDROP_KEY}, headers={"Retry-After": "0"})
    with caplog.at_level(logging.DEBUG):
        first = generate_storefronts(client, users[0]["id"])
        second = generate_storefronts(client, users[0]["id"])
    assert first.status_code == second.status_code == 502
    for text in (first.get_data(as_text=True), second.get_data(as_text=True), caplog.text):
        assert CLIPDROP_KEY not in text
