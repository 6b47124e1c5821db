"""Bad input reaching the app, on SQLite and PostgreSQL alike: control characters in parameters, ids and headers,
days that do not exist, and `/verify` given a decompression bomb, deep nesting, or too many requests."""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from conftest import count_rows, generate_achievement
from core.png import add_text_chunks
from fakes import with_itxt, zlib_bomb
from models import Job

CONTROL_CHARACTERS = ["\x00", "\x01", "\n", "\t", "\x1b", "\x7f", "\x85"]


def assert_invalid(response, field: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["code"], body["field"]) == ("invalid_parameter", field)
    assert "control characters" in body["error"]


@pytest.mark.parametrize("char", CONTROL_CHARACTERS)
def test_a_control_character_in_a_query_parameter_is_400_naming_it(client, app, char):
    assert_invalid(generate_achievement(client, product=f"ab{char}cd"), "product")
    assert_invalid(client.post("/gen-new-storefront-images", query_string={"user_id": "1",
                                                                            "shop_theme": f"te{char}ch"}), "shop_theme")
    assert_invalid(client.get("/usage", query_string={"group_by": f"day{char}"}), "group_by")
    assert_invalid(client.get("/gallery", query_string={"page": f"1{char}"}), "page")
    assert count_rows(app, Job) == 0  # nothing stored that SQL on PostgreSQL would later choke on


@pytest.mark.parametrize("char", CONTROL_CHARACTERS)
def test_a_control_character_in_a_json_body_field_is_400_naming_it(client, app, char):
    response = client.post("/gen-achievement-image", json={"date": "31 Oct", "product": f"ab{char}cd"})
    assert_invalid(response, "product")
    assert count_rows(app, Job) == 0


@pytest.mark.parametrize("path", ["/jobs/abc%00def", "/jobs/abc%00def/events", "/jobs/%01", "/status/1%7F",
                                  "/users/1%00/achievements/1/credential", "/share/1/1%0A"])
def test_a_control_character_in_a_path_id_is_400_naming_it(client, path):
    response = client.get(path, headers={"Accept": "application/json"})
    field = {"/jobs": "job_id", "/users": "user_id", "/share": "achievement_id", "/status": "status_list"}[
        path[:path.index("/", 1)]]
    assert response.status_code == 400
    assert (response.get_json()["code"], response.get_json()["field"]) == ("invalid_parameter", field)


@pytest.mark.parametrize("header", ["Idempotency-Key", "Prefer", "X-Request-ID", "Authorization", "Accept"])
def test_a_control_character_in_a_header_the_service_reads_is_400_naming_it(client, app, header):
    response = generate_achievement(client, headers={header: "a\x01b"})
    assert_invalid(response, header)
    assert count_rows(app, Job) == 0


def test_a_control_character_in_a_parameter_name_is_400(client):
    response = client.get("/view-all-achievement?li%00mit=1")
    assert response.status_code == 400
    assert response.get_json()["field"] == "li\\x00mit"


def test_unicode_beyond_the_controls_is_taken(client):
    response = generate_achievement(client, product="소주 🍶 café")
    assert response.status_code == 200
    assert response.get_json()["product_type"] == "소주 🍶 café"


def test_a_day_that_does_not_exist_says_so_over_http(client):
    response = generate_achievement(client, date="31 Feb")
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "'date' names a day that does not exist: February has days 1 to 29, not 31.",
        "code": "invalid_parameter", "field": "date"}
    early = generate_achievement(client, date="0001-01-01")
    assert early.status_code == 400
    assert early.get_json()["error"] == "'date' must be a day from 1900 to 2200, not in year 1."


def test_deep_nesting_in_a_body_is_400_not_500(client):
    response = client.post("/seedrandom", data="[" * 50_000, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_json"
    deep = client.post("/seedrandom", json={"users": json.loads("[" * 40 + "]" * 40)})
    assert deep.status_code == 400
    assert deep.get_json() == {"error": "The JSON is nested deeper than 32 levels.", "code": "invalid_json"}


# --- /verify --------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def badge_png(client, achievement) -> bytes:
    return client.get(achievement["image_url"]).data


def test_verify_inflates_a_compressed_chunk_to_at_most_1_mib(client, badge_png):
    bomb = with_itxt(badge_png, "openbadgecredential", zlib_bomb(200), compressed=True)  # 200 MiB in ~200 KB
    response = client.post("/verify", data=bomb, content_type="image/png")
    assert response.status_code == 422
    assert response.get_json() == {
        "error": "The PNG's iTXt chunk 'openbadgecredential' cannot be read: the compressed text inflates to more "
                 "than 1024 KiB.", "code": "no_credential"}


def test_verify_reads_a_compressed_chunk_within_the_bound(client, badge_png):
    token = "e30.e30.sig"  # a JWT of empty objects: read, then not verified
    png = with_itxt(badge_png, "openbadgecredential", zlib.compress(token.encode()), compressed=True)
    response = client.post("/verify", data=png, content_type="image/png")
    assert response.status_code == 200
    assert response.get_json()["checks"]["signature"] == "failed"
    exactly_1_mib = with_itxt(badge_png, "openbadgecredential", zlib_bomb(1), compressed=True)
    read = client.post("/verify", data=exactly_1_mib, content_type="image/png")
    assert read.status_code == 422
    assert read.get_json()["error"].startswith("The credential is not a JWT")  # inflated whole, then judged


@pytest.mark.parametrize("nested", ["[" * 50_000, "{\"a\":" * 50_000, "[" * 33 + "]" * 33])
def test_verify_answers_deep_nesting_with_422(client, badge_png, nested):
    as_jwt = f"{b64url(nested.encode())}.{b64url(nested.encode())}.sig"
    bodies = [
        (as_jwt, "application/jwt"),
        (json.dumps({"credential": as_jwt}), "application/json"),
        (f'{{"credential": {{"proof": {nested}', "application/json"),
        (add_text_chunks(badge_png, {"openbadgecredential": "{\"a\": " + nested}), "image/png"),
    ]
    if nested.endswith("]"):  # well-formed, only too deep
        bodies.append((json.dumps({"credential": {"proof": {}, "nested": json.loads(nested)}}), "application/json"))
    for body, content_type in bodies:
        response = client.post("/verify", data=body, content_type=content_type)
        assert response.status_code in (400, 422), (content_type, response.get_data(as_text=True)[:200])
        code = response.get_json()["code"]
        assert code == ("invalid_json" if response.status_code == 400 else "no_credential")
    deep = client.post("/verify", data=json.dumps({"credential": {"proof": {}, "a": json.loads("[" * 40 + "]" * 40)}}),
                       content_type="application/json")
    assert deep.status_code == 422
    assert deep.get_json() == {"error": "The JSON is nested deeper than 32 levels.", "code": "no_credential"}


def test_verify_has_its_own_rate_limit(make_app):
    client = make_app(VERIFY_RATE_LIMIT="3/minute").test_client()
    answers = [client.post("/verify", json={"credential": "x"}).status_code for _ in range(4)]
    assert answers == [422, 422, 422, 429]
    limited = client.post("/verify", json={"credential": "x"})
    assert limited.get_json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert client.get("/view-all-achievement").status_code == 200  # other routes are not counted


def test_verify_rate_limit_defaults_to_60_a_minute(client):
    answers = [client.post("/verify", json={"credential": "x"}) for _ in range(61)]
    assert [a.status_code for a in answers].count(422) == 60
    assert answers[-1].status_code == 429
    assert answers[0].headers["X-RateLimit-Limit"] == "60"
