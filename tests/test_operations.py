"""Operations: /healthz, /metrics, request ids and log lines, PNG headers, secrets kept out, shared rate limits."""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import shutil
from pathlib import Path

import pytest
import responses
from PIL import Image
from sqlalchemy import create_engine

from conftest import PRODUCTION_BADGES, SETTING_NAMES, metric
from core.settings import Settings
from serving import REPO

CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens on the discard port: a remote provider fails at once
SECRETS = {"ADMIN_TOKEN": "adm-5ecret-a1", "CLIPDROP_API_KEY": "cd-5ecret-b2", "STABILITY_API_KEY": "st-5ecret-c3",
           "OPENAI_API_KEY": "oa-5ecret-d4"}
FAILING_REMOTES = {"CLIPDROP_API_URL": CLOSED_PORT, "STABILITY_API_HOST": CLOSED_PORT,
                   "OPENAI_BASE_URL": f"{CLOSED_PORT}/v1", "PROVIDER_RETRIES": "0", "PROVIDER_TIMEOUT_S": "5",
                   "PROVIDER_COOLDOWN_S": "0"}


# --- /healthz -------------------------------------------------------------------------------------


def test_healthz_ok_on_embedded_providers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "image_dir": "ok",
                                                              "notification_channel": "ok"},
                                   "providers": {"image": ["local"], "text": "local"}}


def test_healthz_names_configured_providers_never_their_keys(make_app):
    client = make_app(**SECRETS).test_client()
    response = client.get("/healthz", headers={"Authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}"})
    assert response.status_code == 200
    assert response.get_json()["providers"] == {"image": ["clipdrop", "stability"], "text": "openai"}
    for secret in SECRETS.values():
        assert secret not in response.get_data(as_text=True)


def test_healthz_database_unreachable(app, client):
    app.extensions["engine"].dispose()
    app.extensions["engine"] = create_engine("sqlite:////nonexistent-folder/app.db")  # the database goes away
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["code"] == "unhealthy"
    assert body["error"]
    assert body["checks"] == {"database": "unreachable", "image_dir": "ok", "notification_channel": "ok"}


def test_healthz_image_folder_not_writable(app, client):
    folder = Path(app.extensions["settings"].image_dir)
    shutil.rmtree(folder)
    folder.write_text("a file where the folder was")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "image_dir": "not_writable",
                                            "notification_channel": "ok"}


# --- /metrics -------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_status(client, users):
    for _ in range(3):
        assert client.get(f"/get-recommendations?user_id={users[0]['id']}").status_code == 200
    assert client.get("/get-recommendations?user_id=999").status_code == 404
    assert client.get("/no-such-path").status_code == 404
    labels = {"method": "GET", "route": "/get-recommendations"}
    assert metric(client, "http_requests_total", **labels, status="200") == 3
    assert metric(client, "http_requests_total", **labels, status="404") == 1
    assert metric(client, "http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert metric(client, "http_request_duration_seconds_count", **labels) == 4
    assert metric(client, "http_request_duration_seconds_bucket", **labels, le="+Inf") == 4


def test_metrics_count_generations_by_provider_and_outcome(client, users):
    assert client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=all").status_code == 200
    assert client.post("/gen-achievement-image?date=31%20Oct&product=soju").status_code == 200
    assert metric(client, "generations_total", kind="image", provider="local", outcome="ok") == 4
    assert metric(client, "generations_total", kind="text", provider="local", outcome="ok") == 1
    assert metric(client, "provider_latency_seconds_count", kind="image", provider="local") == 4


def clipdrop_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), "teal").save(out, "PNG")
    return out.getvalue()


def test_metrics_read_clipdrop_credits_from_its_answers(make_app, users):
    client = make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY="k", PROVIDER_RETRIES="0").test_client()
    assert metric(client, "provider_credits_remaining", provider="clipdrop") is None  # nothing known yet
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, "https://clipdrop-api.co/text-to-image/v1", body=clipdrop_png(),
                 content_type="image/png", headers={"x-remaining-credits": "1234"})
        mock.add(responses.POST, "https://clipdrop-api.co/text-to-image/v1", status=500, json={"error": "down"})
        assert client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech").status_code == 200
        again = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech&fresh=true")
        assert again.status_code == 502
    assert metric(client, "generations_total", kind="image", provider="clipdrop", outcome="ok") == 1
    assert metric(client, "generations_total", kind="image", provider="clipdrop", outcome="error") == 1
    assert metric(client, "provider_credits_remaining", provider="clipdrop") == 1234


def test_metrics_leave_credits_alone_without_a_reading(make_app, users):
    client = make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY="k", **FAILING_REMOTES).test_client()
    assert client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech").status_code == 502
    assert metric(client, "generations_total", kind="image", provider="clipdrop", outcome="error") == 1
    assert metric(client, "provider_credits_remaining", provider="clipdrop") is None  # never a made-up 0


# --- request ids and the request log --------------------------------------------------------------


def test_request_id_is_echoed_when_given(client):
    response = client.get("/view-all-achievement", headers={"X-Request-ID": "checkout-42.a"})
    assert response.headers["X-Request-ID"] == "checkout-42.a"


@pytest.mark.parametrize("given", [None, "", "has space", "quote\"d", "é", "x" * 129, "<script>"])
def test_request_id_is_made_when_absent_or_unsafe(client, given):
    headers = {"X-Request-ID": given} if given is not None else {}
    first = client.get("/view-all-achievement", headers=headers).headers["X-Request-ID"]
    second = client.get("/view-all-achievement", headers=headers).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_request_id_on_errors_too(client):
    response = client.get("/nope", headers={"X-Request-ID": "abc"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "abc"


def test_one_log_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="futurepast.requests")
    client.get("/get-recommendations?user_id=77", headers={"X-Request-ID": "rid-1"})
    client.post("/seed-specific", headers={"X-Request-ID": "rid-2"})
    lines = [record.getMessage() for record in caplog.records if record.name == "futurepast.requests"]
    assert len(lines) == 2
    assert re.fullmatch(r"method=GET path=/get-recommendations status=404 duration_ms=\d+\.\d request_id=rid-1",
                        lines[0])
    assert lines[1].startswith("method=POST path=/seed-specific status=201 ")
    assert "77" not in lines[0]  # the query string is the client's data


# --- security -------------------------------------------------------------------------------------


def test_png_routes_have_a_strict_content_type(client, users):
    made = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech").get_json()
    badge = client.post("/gen-achievement-image?date=31%20Oct&product=soju").get_json()
    for url in (made["storefronts"][0]["image_url"], badge["image_url"]):
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert client.get("/healthz").headers["X-Content-Type-Options"] == "nosniff"


def test_no_secret_in_any_answer_or_log_line(make_app, caplog):
    caplog.set_level(logging.INFO)
    client = make_app(**SECRETS, **FAILING_REMOTES).test_client()
    admin = {"Authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}"}
    users = client.post("/seed-specific", headers=admin).get_json()["users"]
    answers = [
        client.post("/seed-specific", headers={"Authorization": "Bearer wrong"}),
        client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=all"),
        client.post("/gen-achievement-image?date=31%20Oct&product=soju"),
        client.get("/healthz"), client.get("/metrics"), client.get("/nope"),
    ]
    assert [answer.status_code for answer in answers[:3]] == [401, 502, 502]
    seen = "\n".join(caplog.text.splitlines() + [str(answer.headers) + answer.get_data(as_text=True)
                                                 for answer in answers])
    for secret in SECRETS.values():
        assert secret not in seen


def test_every_setting_is_in_env_example_and_in_the_tests_setting_names():
    code = (REPO / "core/settings.py").read_text()
    read = set(re.findall(r'(?:get|text|number|choice|flag)\("([A-Z][A-Z0-9_]+)"', code))
    example = (REPO / ".env.example").read_text()
    assert {"DATABASE_URL", "CELERY_QUEUE", "JOB_RETENTION_DAYS", "RATELIMIT_FAIL_OPEN"} <= read
    assert {name for name in read if not re.search(rf"\b{name}\b", example)} == set(), "missing from .env.example"
    assert read - set(SETTING_NAMES) == set(), "settings missing from tests/conftest.py SETTING_NAMES"


def test_settings_never_show_secrets_in_their_repr():
    settings = Settings.from_mapping({**SECRETS, "DATABASE_URL": "postgresql+psycopg://app:db-5ecret@db/app",
                                      "RATELIMIT_STORAGE_URI": "redis://:rl-5ecret@cache:6379/0"})
    shown = repr(settings)
    for secret in [*SECRETS.values(), "db-5ecret", "rl-5ecret"]:
        assert secret not in shown


def test_production_warns_on_every_origin_but_not_on_shared_rate_counts(make_app, caplog):
    make_app(APP_ENV="production", ADMIN_TOKEN="t", GENERATION_RATE_LIMIT="5/minute",
             **PRODUCTION_BADGES)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("CORS_ORIGINS" in message for message in warnings)
    assert not any("RATELIMIT_STORAGE_URI" in message for message in warnings)  # the database shares the count

    caplog.clear()
    make_app(APP_ENV="production", ADMIN_TOKEN="t", CORS_ORIGINS="https://shop.example",
             **PRODUCTION_BADGES)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_rate_limit_per_client_behind_a_trusted_proxy(make_app):
    client = make_app(GENERATION_RATE_LIMIT="1/minute", TRUSTED_PROXIES="1").test_client()
    first, second = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "203.0.113.8"}
    assert client.post("/gen-achievement-image", headers=first).status_code == 400
    assert client.post("/gen-achievement-image", headers=first).status_code == 429
    assert client.post("/gen-achievement-image", headers=second).status_code == 400  # another client


def test_forwarded_for_ignored_without_a_trusted_proxy(make_app):
    """Otherwise any client could pick a new address per request and never be limited."""
    client = make_app(GENERATION_RATE_LIMIT="1/minute").test_client()
    assert client.post("/gen-achievement-image", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 400
    assert client.post("/gen-achievement-image", headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 429


def test_request_id_readable_by_browsers(client):
    response = client.get("/view-all-achievement", headers={"Origin": "https://shop.example"})
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]


# --- rate limits shared through Redis -------------------------------------------------------------


@pytest.fixture
def redis_storage():
    """TEST_REDIS_URL and a key prefix of this test's own; its keys are deleted afterwards."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: the Redis rate-limit test does not run")
    import redis

    prefix = f"test-{secrets.token_hex(6)}"
    yield url, prefix
    connection = redis.Redis.from_url(url)
    try:
        for key in connection.scan_iter(match=f"*{prefix}*"):
            connection.delete(key)
    finally:
        connection.close()


def test_rate_limit_counted_once_across_workers_in_redis(make_app, redis_storage):
    url, prefix = redis_storage
    settings = {"GENERATION_RATE_LIMIT": "2/minute", "RATELIMIT_STORAGE_URI": url, "RATELIMIT_KEY_PREFIX": prefix}
    first, second = make_app(**settings).test_client(), make_app(**settings).test_client()  # two workers
    assert first.post("/gen-achievement-image").status_code == 400
    assert second.post("/gen-achievement-image").status_code == 400
    limited = first.post("/gen-achievement-image")
    assert limited.status_code == 429
    assert limited.get_json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    assert second.post("/gen-achievement-image").status_code == 429
    assert second.post("/gen-new-storefront-images").status_code == 400  # its own count

    import redis

    connection = redis.Redis.from_url(url)
    try:
        assert any(prefix in key.decode() for key in connection.scan_iter(match=f"*{prefix}*"))
    finally:
        connection.close()
