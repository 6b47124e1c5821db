"""Stability AI: the v2beta request we send, the aspect ratio per picture, moderation in both forms, faults."""

from __future__ import annotations

import pytest
import requests
import responses

from conftest import assert_nothing_saved, count_rows, generate_storefronts, png_size
from fakes import STABILITY_CORE_URL, STABILITY_KEY, form_fields, image_bytes, png_text
from models import Storefront


@pytest.fixture
def client(make_app):
    return make_app(STABILITY_API_KEY=STABILITY_KEY, PROVIDER_RETRIES="2").test_client()


@pytest.fixture
def app(client):
    return client.application


def test_storefront_from_stability_core(client, app, users, http):
    http.add(responses.POST, STABILITY_CORE_URL, body=image_bytes((1216, 1216)), content_type="image/png",
             headers={"finish-reason": "SUCCESS", "seed": "1234567"})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 200, response.get_json()

    [call] = http.calls
    assert call.request.url == STABILITY_CORE_URL
    assert call.request.headers["Authorization"] == f"Bearer {STABILITY_KEY}"
    assert call.request.headers["Accept"] == "image/*"
    assert call.request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    fields = form_fields(call.request)
    assert fields["aspect_ratio"] == "1:1"
    assert fields["output_format"] == "png"
    assert fields["style_preset"] == "photographic"
    assert "a mouse at the bottom left" in fields["prompt"]
    for unwanted in ("text", "watermark", "clutter"):
        assert unwanted in fields["negative_prompt"]

    stored = client.get(response.get_json()["storefronts"][0]["image_url"]).data
    assert png_size(stored) == (1024, 1024)
    provenance = png_text(stored)
    assert (provenance["provider"], provenance["model"], provenance["seed"]) == ("stability", "stable-image-core",
                                                                                 "1234567")
    assert provenance["prompt"] == fields["prompt"]
    assert count_rows(app, Storefront) == 1


def test_badge_asks_for_1_by_1(client, app, http):
    http.add(responses.POST, STABILITY_CORE_URL, body=image_bytes((1024, 1024)), content_type="image/png",
             headers={"finish-reason": "SUCCESS", "seed": "7"})
    response = client.post("/gen-achievement-image?date=31 Oct&product=soju")
    assert response.status_code == 200, response.get_json()
    fields = form_fields(http.calls[0].request)
    assert fields["aspect_ratio"] == "1:1"
    assert fields["style_preset"] == "digital-art"
    assert png_size(client.get(response.get_json()["image_url"]).data) == (1024, 1024)


def test_a_badge_of_another_size_is_fitted_to_the_square(client, app, http):
    """Stability's engines may answer another size than asked (core draws about 1.5 MP): fitted, not refused."""
    http.add(responses.POST, STABILITY_CORE_URL, body=image_bytes((1216, 1216)), content_type="image/png",
             headers={"finish-reason": "SUCCESS", "seed": "7"})
    response = client.post("/gen-achievement-image?date=31 Oct&product=soju")
    assert response.status_code == 200, response.get_json()
    assert png_size(client.get(response.get_json()["image_url"]).data) == (1024, 1024)


@pytest.mark.parametrize("engine", ["sd3", "ultra"])
def test_engine_setting_picks_the_endpoint(make_app, http, engine):
    client = make_app(STABILITY_API_KEY=STABILITY_KEY, STABILITY_ENGINE=engine).test_client()
    users = client.post("/seed-specific").get_json()["users"]
    url = f"https://api.stability.ai/v2beta/stable-image/generate/{engine}"
    http.add(responses.POST, url, body=image_bytes(), content_type="image/png", headers={"finish-reason": "SUCCESS"})
    assert generate_storefronts(client, users[0]["id"]).status_code == 200
    fields = form_fields(http.calls[0].request)
    assert "style_preset" not in fields  # a core-only field
    assert fields["output_format"] == "png"


def test_host_setting(make_app, http):
    client = make_app(STABILITY_API_KEY=STABILITY_KEY, STABILITY_API_HOST="http://127.0.0.1:9/").test_client()
    users = client.post("/seed-specific").get_json()["users"]
    http.add(responses.POST, "http://127.0.0.1:9/v2beta/stable-image/generate/core", body=image_bytes(),
             content_type="image/png")
    assert generate_storefronts(client, users[0]["id"]).status_code == 200


def test_moderation_403_is_a_rejected_prompt(client, app, users, http):
    rejected = http.add(responses.POST, STABILITY_CORE_URL, status=403,
                        json={"id": "abc", "name": "content_moderation",
                              "errors": ["Your request was flagged by our content moderation system"]})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 422
    body = response.get_json()
    assert (body["code"], body["provider"]) == ("content_rejected", "stability")
    assert rejected.call_count == 1
    assert_nothing_saved(app)


def test_content_filtered_200_is_a_rejected_prompt(client, app, users, http):
    blurred = http.add(responses.POST, STABILITY_CORE_URL, body=image_bytes(), content_type="image/png",
                       headers={"finish-reason": "CONTENT_FILTERED", "seed": "1"})
    response = client.post("/gen-achievement-image?date=31 Oct&product=soju")
    assert response.status_code == 422
    assert response.get_json()["code"] == "content_rejected"
    assert blurred.call_count == 1
    assert_nothing_saved(app)


@pytest.mark.parametrize(("status", "name"), [(401, "unauthorized"), (402, "payment_required"),
                                              (403, "forbidden"), (400, "bad_request"), (422, "invalid_language")])
def test_other_4xx_is_a_provider_error_without_retry(client, app, users, http, status, name):
    refused = http.add(responses.POST, STABILITY_CORE_URL, status=status,
                       json={"id": "x", "name": name, "errors": ["refused"]})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 502
    assert (response.get_json()["code"], response.get_json()["provider"]) == ("provider_error", "stability")
    assert refused.call_count == 1
    assert STABILITY_KEY not in response.get_data(as_text=True)
    assert_nothing_saved(app)


def test_5xx_then_success(client, users, http):
    failing = http.add(responses.POST, STABILITY_CORE_URL, status=503, json={"name": "unavailable"},
                       headers={"Retry-After": "0"})
    http.add(responses.POST, STABILITY_CORE_URL, status=502, body="bad gateway", headers={"Retry-After": "0"})
    ok = http.add(responses.POST, STABILITY_CORE_URL, body=image_bytes(), content_type="image/png")
    assert generate_storefronts(client, users[0]["id"]).status_code == 200
    assert (failing.call_count, ok.call_count, len(http.calls)) == (1, 1, 3)


def test_5xx_until_retries_run_out(client, app, users, http):
    failing = http.add(responses.POST, STABILITY_CORE_URL, status=500, json={"name": "server_error"},
                       headers={"Retry-After": "0"})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 502
    assert failing.call_count == 3  # PROVIDER_RETRIES=2
    assert_nothing_saved(app)


def test_timeout_gives_up_after_retries(make_app, http):
    client = make_app(STABILITY_API_KEY=STABILITY_KEY, PROVIDER_RETRIES="1").test_client()
    users = client.post("/seed-specific").get_json()["users"]
    hung = http.add(responses.POST, STABILITY_CORE_URL, body=requests.exceptions.ConnectTimeout("timed out"))
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 502
    assert "did not answer" in response.get_json()["error"]
    assert hung.call_count == 2
    assert_nothing_saved(client.application)


def test_non_image_bytes_are_a_provider_error(client, app, users, http):
    http.add(responses.POST, STABILITY_CORE_URL, json={"image": "not-here"}, headers={"finish-reason": "SUCCESS"})
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 502
    assert response.get_json()["provider"] == "stability"
    assert_nothing_saved(app)
