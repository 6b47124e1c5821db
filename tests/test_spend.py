"""The ledger of provider calls, /usage, the daily budget and the `usage` command, against mocked vendors.

The vendors are mocked at the HTTP layer only (`responses` for Clipdrop and Stability, a stub OpenAI server on
127.0.0.1): every row of the ledger must match an attempt the mock saw.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
import requests
import responses
import time_machine
from sqlalchemy import select, text

from api_docs import load_openapi
from conftest import generate_storefronts, metric
from fakes import CLIPDROP_KEY, CLIPDROP_URL, OPENAI_KEY, STABILITY_CORE_URL, STABILITY_KEY, image_bytes
from models import ProviderCall
from test_openai_writer import GOOD, StubServer, chat, error
from test_openapi import assert_documented

EVENING = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)  # 4 hours before the next UTC midnight
NEXT_DAY = datetime(2026, 12, 2, 0, 0, 5, tzinfo=UTC)
NO_WAIT = {"Retry-After": "0"}  # our retry policy honours it: the retries of these tests do not sleep
NO_CACHE = {"Cache-Control": "no-cache"}  # a new picture, not the one the image cache holds


def rows(app) -> list[ProviderCall]:
    with app.extensions["sessionmaker"]() as session:
        return list(session.scalars(select(ProviderCall).order_by(ProviderCall.id)))


def clipdrop_ok(http, credits_left: int = 97):
    return http.add(responses.POST, CLIPDROP_URL, body=image_bytes(), content_type="image/png",
                    headers={"x-remaining-credits": str(credits_left), "x-credits-consumed": "1"})


@pytest.fixture
def clipdrop_app(make_app):
    return make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_RETRIES="2")


@pytest.fixture
def client(clipdrop_app):
    return clipdrop_app.test_client()


# --- the ledger: one row per attempt the vendor saw -----------------------------------------------


def test_a_paid_call_is_one_row_with_the_vendors_figures(client, clipdrop_app, users, http):
    clipdrop_ok(http)
    response = generate_storefronts(client, users[0]["id"])
    assert response.status_code == 200, response.get_json()
    [row] = rows(clipdrop_app)
    assert (row.provider, row.model, row.kind, row.outcome, row.status) == (
        "clipdrop", "clipdrop text-to-image v1", "image", "ok", 200)
    assert (row.credits, row.remaining_credits, row.cost_usd) == (1.0, 97, pytest.approx(0.01))
    assert row.route == "/gen-new-storefront-images"
    assert row.request_id == response.headers["X-Request-ID"]
    assert row.job_id == response.get_json()["job_id"]
    assert row.latency_ms >= 0
    assert row.day == row.created_at.date().isoformat()


@pytest.mark.parametrize(("answers", "outcomes", "status"), [
    ([500, 500, 500], ["failed", "failed", "failed"], 502),
    ([429, 200], ["failed", "ok"], 200),
    ([503, 500, 200], ["failed", "failed", "ok"], 200),
    ([402], ["failed"], 502),
    ([401], ["failed"], 502),
    ([requests.exceptions.ConnectTimeout("slow"), 200], ["no_answer", "ok"], 200),
    ([requests.exceptions.ConnectionError("dropped"), 200], ["no_answer", "ok"], 200),
], ids=["5xx-exhausted", "429-then-ok", "5xx-then-ok", "no-credits", "bad-key", "timeout-then-ok", "dropped-then-ok"])
def test_every_attempt_of_each_fault_is_a_row(client, clipdrop_app, users, http, answers, outcomes, status):
    mocks = []
    for answer in answers:
        if isinstance(answer, Exception):
            mocks.append(http.add(responses.POST, CLIPDROP_URL, body=answer))
        elif answer == 200:
            mocks.append(clipdrop_ok(http, credits_left=42))
        else:
            mocks.append(http.add(responses.POST, CLIPDROP_URL, status=answer, json={"error": "no"}, headers=NO_WAIT))
    assert generate_storefronts(client, users[0]["id"]).status_code == status
    seen = rows(clipdrop_app)
    assert len(seen) == len(http.calls) == len(answers)
    assert [row.outcome for row in seen] == outcomes
    assert [row.status for row in seen] == [None if isinstance(a, Exception) else a for a in answers]
    # Only a delivered picture costs a credit.
    assert sum(row.cost_usd for row in seen) == pytest.approx(0.01 * outcomes.count("ok"))
    if 402 in answers:
        assert seen[0].remaining_credits == 0
        assert clipdrop_app.extensions["ledger"].credits("clipdrop") == 0


def test_failover_rows_name_each_provider_and_costs_add_up(make_app, users, http):
    app = make_app(CLIPDROP_API_KEY=CLIPDROP_KEY, STABILITY_API_KEY=STABILITY_KEY, PROVIDER_RETRIES="0",
                   PRICE_STABILITY_CREDIT_USD="0.02")
    http.add(responses.POST, CLIPDROP_URL, status=500, json={"error": "down"})
    http.add(responses.POST, STABILITY_CORE_URL, body=image_bytes(), content_type="image/png",
             headers={"finish-reason": "SUCCESS", "seed": "7"})
    assert generate_storefronts(app.test_client(), users[0]["id"]).status_code == 200
    clipdrop, stability = rows(app)
    assert (clipdrop.provider, clipdrop.outcome, clipdrop.cost_usd) == ("clipdrop", "failed", 0)
    assert (stability.provider, stability.model, stability.outcome) == ("stability", "stable-image-core", "ok")
    assert (stability.credits, stability.cost_usd) == (3.0, pytest.approx(0.06))  # 3 credits at the price set


def test_every_theme_of_a_concurrent_request_is_recorded_with_its_request(client, clipdrop_app, users, http):
    clipdrop_ok(http)
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=all",
                           headers={"X-Request-ID": "many-themes-1"})
    assert response.status_code == 200
    seen = rows(clipdrop_app)
    assert len(seen) == len(http.calls) == len(response.get_json()["storefronts"]) > 1
    assert {(row.request_id, row.route) for row in seen} == {("many-themes-1", "/gen-new-storefront-images")}


def test_local_providers_are_recorded_at_no_cost(make_app):
    app = make_app()
    response = app.test_client().post("/gen-achievement-image?date=31 Oct&product=soju")
    assert response.status_code == 200
    assert [(row.provider, row.kind, row.outcome, row.cost_usd) for row in rows(app)] == [
        ("local", "text", "ok", 0), ("local", "image", "ok", 0)]


def test_a_broken_ledger_never_fails_the_generation(client, clipdrop_app, users, http, caplog):
    clipdrop_ok(http)
    engine = clipdrop_app.extensions["engine"]
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE provider_calls"))
    try:
        response = generate_storefronts(client, users[0]["id"])
    finally:  # PostgreSQL's schema serves the whole run
        ProviderCall.__table__.create(engine)
    assert response.status_code == 200
    assert len(response.get_json()["storefronts"]) == 1
    assert any("ledger row" in record.getMessage() for record in caplog.records if record.levelno == logging.ERROR)


# --- OpenAI: attempts seen by our transport, tokens from the reply ---------------------------------


@pytest.fixture
def openai_stub():
    with StubServer() as server:
        yield server


def with_usage(reply, prompt_tokens: int, completion_tokens: int):
    reply.body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}
    return reply


def test_openai_attempts_and_tokens_are_recorded(make_app, openai_stub):
    app = make_app(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=openai_stub.base_url, OPENAI_MODEL="gpt-5-mini",
                   PROVIDER_RETRIES="2", IMAGE_PROVIDER="local")
    openai_stub.answer(error(500, retry_after_ms="1"), with_usage(chat(json.dumps(GOOD)), 1000, 500))
    response = app.test_client().post("/gen-achievement-image?date=31 Oct&product=soju")
    assert response.status_code == 200, response.get_json()
    failed, answered, image = rows(app)
    assert len(openai_stub.requests) == 2
    assert (failed.provider, failed.kind, failed.outcome, failed.status, failed.cost_usd) == (
        "openai", "text", "failed", 500, 0)
    assert (answered.model, answered.outcome, answered.input_tokens, answered.output_tokens) == (
        "gpt-5-mini", "ok", 1000, 500)
    assert answered.cost_usd == pytest.approx((1000 * 0.25 + 500 * 2.00) / 1e6)
    assert (image.provider, image.cost_usd) == ("local", 0)


def test_openai_unusable_replies_are_each_a_paid_row(make_app, openai_stub):
    app = make_app(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=openai_stub.base_url, PROVIDER_RETRIES="1",
                   IMAGE_PROVIDER="local", PRICE_OPENAI_INPUT_PER_MTOK_USD="1", PRICE_OPENAI_OUTPUT_PER_MTOK_USD="1")
    openai_stub.answer(with_usage(chat("no json here"), 100, 10))
    assert app.test_client().post("/gen-achievement-image?date=31 Oct&product=soju").status_code == 502
    seen = rows(app)
    assert len(seen) == len(openai_stub.requests) == 2
    assert [row.outcome for row in seen] == ["ok", "ok"]  # answered, and billed, even if we could not use it
    assert sum(row.cost_usd for row in seen) == pytest.approx(2 * 110 / 1e6)


# --- /usage, the metrics and the command ------------------------------------------------------------


def spend_two_days(app, users, http):
    """Two Clipdrop pictures on 1 December (one after a failed attempt); on 2 December, a new one of the same
    request (`Cache-Control: no-cache`), then that request again, answered from the image cache."""
    client = app.test_client()
    http.add(responses.POST, CLIPDROP_URL, status=500, json={"error": "down"}, headers=NO_WAIT)
    clipdrop_ok(http)
    with time_machine.travel(EVENING, tick=False):
        assert generate_storefronts(client, users[0]["id"]).status_code == 200
        assert generate_storefronts(client, users[1]["id"]).status_code == 200
    with time_machine.travel(NEXT_DAY, tick=False):
        assert generate_storefronts(client, users[0]["id"], headers=NO_CACHE).status_code == 200
        assert generate_storefronts(client, users[0]["id"]).get_json()["storefronts"][0]["cached"] is True


def test_usage_groups_and_totals(make_app, http):
    app = make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_RETRIES="1", ADMIN_TOKEN="t")
    users = app.test_client().post("/seed-specific", headers={"Authorization": "Bearer t"}).get_json()["users"]
    spend_two_days(app, users, http)
    client = app.test_client()
    auth = {"Authorization": "Bearer t"}

    assert client.get("/usage?from=2026-12-01&to=2026-12-03").status_code == 401
    by_provider = client.get("/usage?from=2026-12-01&to=2026-12-03", headers=auth).get_json()
    assert by_provider["group_by"] == "provider"
    assert (by_provider["from"], by_provider["to"]) == ("2026-12-01", "2026-12-03")
    expected = {"calls": 4, "cached": 1, "ok": 3, "failed": 1, "images": 3, "input_tokens": 0, "output_tokens": 0,
                "credits": 3.0, "cost_usd": 0.03}
    assert by_provider["groups"] == [{"key": "clipdrop", **expected}]
    assert by_provider["total"] == expected

    by_day = client.get("/usage?from=2026-12-01&to=2026-12-03&group_by=day", headers=auth).get_json()
    assert [(g["key"], g["calls"], g["cost_usd"]) for g in by_day["groups"]] == [
        ("2026-12-01", 3, 0.02), ("2026-12-02", 1, 0.01)]
    assert by_day["total"]["calls"] == 4

    one_day = client.get("/usage?from=2026-12-02&to=2026-12-03&group_by=route", headers=auth).get_json()
    assert one_day["groups"] == [{"key": "/gen-new-storefront-images", "calls": 1, "cached": 1, "ok": 1, "failed": 0,
                                  "images": 1, "input_tokens": 0, "output_tokens": 0, "credits": 1.0,
                                  "cost_usd": 0.01}]
    with time_machine.travel(NEXT_DAY, tick=False):  # by default: today
        assert client.get("/usage", headers=auth).get_json()["total"]["calls"] == 1


@pytest.mark.parametrize("query", ["from=2026-13-01", "from=1.12.2026", "to=", "from=9999-12-31", "group_by=user",
                                   "group_by=", "to=2026-12-01&from=2026-12-01", "from=2020-01-01&to=2026-01-01"])
def test_usage_refuses_bad_parameters(client, query):
    response = client.get(f"/usage?{query}")
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_parameter"


def test_usage_command_prints_the_table(clipdrop_app, users, http):
    clipdrop_ok(http)
    assert generate_storefronts(clipdrop_app.test_client(), users[0]["id"]).status_code == 200
    result = clipdrop_app.test_cli_runner().invoke(args=["usage", "--days", "7"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["provider", "calls", "cached", "ok", "failed", "images", "input_tokens",
                                "output_tokens", "credits", "cost_usd"]
    assert lines[2].split() == ["clipdrop", "1", "0", "1", "0", "1", "0", "0", "1.0", "0.01"]
    assert lines[3].split()[0] == "TOTAL"


def test_metrics_show_cost_and_what_is_left_of_the_budget(make_app, users, http):
    app = make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY=CLIPDROP_KEY, GENERATION_BUDGET_USD="1")
    client = app.test_client()
    assert metric(client, "budget_remaining_usd") == 1.0
    clipdrop_ok(http, credits_left=55)
    assert generate_storefronts(client, users[0]["id"]).status_code == 200
    assert metric(client, "provider_cost_usd_total", provider="clipdrop") == pytest.approx(0.01)
    assert metric(client, "budget_remaining_usd") == pytest.approx(0.99)
    assert metric(client, "provider_credits_remaining", provider="clipdrop") == 55


# --- the daily budget ---------------------------------------------------------------------------


def test_budget_reached_mid_day_refuses_until_the_next_utc_day(make_app, users, http, caplog):
    app = make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY=CLIPDROP_KEY, GENERATION_BUDGET_USD="0.025")
    client = app.test_client()
    paid = clipdrop_ok(http)
    with time_machine.travel(EVENING, tick=False):  # new pictures each time, not the cached one
        assert generate_storefronts(client, users[0]["id"], headers=NO_CACHE).status_code == 200
        assert generate_storefronts(client, users[0]["id"], headers=NO_CACHE).status_code == 200  # 0.02: 80%, warned
        assert generate_storefronts(client, users[0]["id"], headers=NO_CACHE).status_code == 200  # 0.03: may go over
        refused = generate_storefronts(client, users[0]["id"])
        again = client.post("/gen-achievement-image?date=31 Oct&product=soju")
    assert refused.status_code == again.status_code == 429
    body = refused.get_json()
    assert (body["code"], body["budget_usd"], body["spent_usd"]) == ("budget_exhausted", 0.025, 0.03)
    assert refused.headers["Retry-After"] == str(4 * 3600)
    assert_documented(load_openapi(), "post", "/gen-new-storefront-images", refused)
    assert again.get_json()["code"] == "budget_exhausted"
    assert paid.call_count == 3  # refused before any provider call
    assert len(rows(app)) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "budget" in r.getMessage()]
    assert len(warnings) == 1 and "80%" in warnings[0]

    with time_machine.travel(NEXT_DAY, tick=False):
        assert generate_storefronts(client, users[0]["id"], headers=NO_CACHE).status_code == 200
    assert paid.call_count == 4


def test_a_budget_never_refuses_the_local_providers(make_app, users):
    app = make_app(GENERATION_BUDGET_USD="0")
    assert generate_storefronts(app.test_client(), users[0]["id"]).status_code == 200


def test_a_budget_is_checked_after_the_request_is_valid(make_app):
    client = make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY=CLIPDROP_KEY, GENERATION_BUDGET_USD="0").test_client()
    assert generate_storefronts(client, 999).get_json()["code"] == "user_not_found"
    assert client.post("/gen-achievement-image?product=soju&date=nonsense").status_code == 400
    assert client.post("/gen-achievement-image?product=soju&date=31 Oct").get_json()["code"] == "budget_exhausted"
