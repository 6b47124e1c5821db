"""Open Badges 3.0 credentials: their shape, the VC-JWT checked by a second library, baking, verifying, revoking."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema_rs
import jwt as pyjwt
import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, insert
from sqlalchemy.pool import NullPool

from conftest import DATABASES, TEST_SIGNING_KEY, count_rows, png_size, postgres_base_url, postgres_schema
from core import schema
from main import create_app
from models import Achievement, BadgeCredential, User, UserAchievement

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "open_badge_credential.json").read_text())
CREDENTIAL = "/users/{user}/achievements/{achievement}/credential"
BADGE = "/users/{user}/achievements/{achievement}/badge.png"
ALL_OK = {"signature": "ok", "status": "active", "issuer": "ok", "expiry": "ok"}


@pytest.fixture
def awarded(client, users):
    """User 1 holds achievement 1 (added) and 2 (assigned); achievement 3 exists but is not theirs."""
    assert client.post("/seedrandom", json={"users": 0, "achievements": 3, "storefronts": 0}).status_code == 201
    assert client.post("/add-achievement", json={"user_id": 1, "achievement_id": 1}).status_code == 201
    assert client.post("/assign-achievements-to-user", json={"user_id": 1, "achievement_list": [1, 2]}).status_code \
        == 200
    return client


def get_jwt(client, user=1, achievement=1) -> str:
    response = client.get(CREDENTIAL.format(user=user, achievement=achievement),
                          headers={"Accept": "application/vc+jwt"})
    assert response.status_code == 200, response.get_json()
    assert response.mimetype == "application/vc+jwt"
    return response.get_data(as_text=True)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (type, data) chunk of a PNG, checking the signature and each CRC: a plain parser, not PIL."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC on {kind!r}"
        chunks.append((kind, body))
        position += 12 + length
    assert chunks[-1][0] == b"IEND"
    return chunks


def itxt(body: bytes) -> tuple[str, str]:
    """Keyword and text of an uncompressed iTXt chunk."""
    keyword, rest = body.split(b"\0", 1)
    assert rest[0] == 0  # not compressed
    _language, _translated, text = rest[2:].split(b"\0", 2)
    return keyword.decode("latin-1"), text.decode("utf-8")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def status_bits(client, status_list: int = 1) -> bytes:
    response = client.get(f"/status/{status_list}")
    assert response.status_code == 200
    subject = response.get_json()["credentialSubject"]
    assert subject["type"] == "BitstringStatusList" and subject["statusPurpose"] == "revocation"
    encoded = subject["encodedList"]
    assert encoded.startswith("u")  # multibase base64url
    return gzip.decompress(base64.urlsafe_b64decode(encoded[1:] + "=" * (-len(encoded[1:]) % 4)))


def bit(bits: bytes, index: int) -> int:
    return bits[index // 8] >> (7 - index % 8) & 1


def verify(client, token: str) -> dict:
    response = client.post("/verify", json={"credential": token})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_the_credential_has_the_shape_of_an_open_badge(awarded, users):
    response = awarded.get(CREDENTIAL.format(user=1, achievement=1))
    assert response.status_code == 200 and response.mimetype == "application/json"
    credential = response.get_json()
    jsonschema_rs.Draft202012Validator(SCHEMA).validate(credential)
    achievement = awarded.get("/view-all-achievement").get_json()["achievements"][0]
    assert credential["name"] == credential["credentialSubject"]["achievement"]["name"] == achievement["name"]
    assert credential["credentialSubject"]["achievement"]["description"] == achievement["description"]
    assert credential["issuer"] == {"id": "http://localhost/issuer", "type": ["Profile"], "name": "Future x Past",
                                    "url": "http://localhost"}
    # The recipient is a salted hash of the user's id, never their name.
    identity = credential["credentialSubject"]["identifier"][0]
    assert identity["identityHash"] == "sha256$" + hashlib.sha256(f"1{identity['salt']}".encode()).hexdigest()
    assert users[0]["name"] not in json.dumps(credential)
    assert awarded.get("/issuer").get_json()["id"] == credential["issuer"]["id"]

    # The schema can fail: what the specifications forbid is refused.
    validator = jsonschema_rs.Draft202012Validator(SCHEMA)
    subject = credential["credentialSubject"]
    for broken in [{k: v for k, v in credential.items() if k != "credentialStatus"},
                   {**credential, "credentialStatus": {**credential["credentialStatus"], "statusListIndex": 1}},
                   {**credential, "credentialSubject": {**subject, "identifier": [{**identity, "identityHash": "1"}]}},
                   {**credential, "credentialSubject": {**subject, "identifier": [{**identity, "identityType": "x"}]}},
                   {**credential, "type": ["VerifiableCredential"]}]:
        assert not validator.is_valid(broken)


def test_the_vc_jwt_verifies_with_pyjwt_and_the_published_key(awarded):
    token = get_jwt(awarded)
    assert token == awarded.get(CREDENTIAL.format(user=1, achievement=1) + "?format=jwt").get_data(as_text=True)
    keys = awarded.get("/.well-known/jwks.json").get_json()["keys"]
    assert [(key["kty"], key["crv"]) for key in keys] == [("OKP", "Ed25519")]
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["typ"] == "vc+jwt" and header["kid"] == keys[0]["kid"]
    claims = pyjwt.decode(token, pyjwt.PyJWK(keys[0]).key, algorithms=["EdDSA"])
    # VC-JOSE-COSE: the claims set is the credential itself.
    assert claims == awarded.get(CREDENTIAL.format(user=1, achievement=1)).get_json()
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), pyjwt.PyJWK(keys[0]).key,
                     algorithms=["EdDSA"])


def test_the_baked_png_carries_the_jwt_in_one_itxt_chunk_and_the_same_pixels(awarded):
    response = awarded.get(BADGE.format(user=1, achievement=1))
    assert response.status_code == 200 and response.mimetype == "image/png"
    original = awarded.get("/get-achievement-image?achievement_id=1").data
    baked = png_chunks(response.data)
    credentials = [itxt(body) for kind, body in baked if kind == b"iTXt" and body.startswith(b"openbadgecredential\0")]
    assert credentials == [("openbadgecredential", get_jwt(awarded))]
    # Spliced in, not re-encoded: every chunk of the original is there, in order, byte for byte.
    assert [chunk for chunk in baked if chunk[1] not in {c[1] for c in png_chunks(original)}] == \
        [(b"iTXt", b"openbadgecredential\0\0\0\0\0" + credentials[0][1].encode())]
    assert png_size(response.data) == png_size(original)


def test_verify_accepts_the_baked_png_and_the_jwt(awarded):
    png = awarded.get(BADGE.format(user=1, achievement=1)).data
    from_png = awarded.post("/verify", data=png, content_type="image/png")
    assert from_png.status_code == 200
    body = from_png.get_json()
    assert body["verified"] is True and body["checks"] == ALL_OK
    assert body["credential"]["credentialSubject"]["achievement"]["id"].endswith("/achievements/1")
    assert verify(awarded, get_jwt(awarded)) == body


def test_verify_says_no_credential_for_a_plain_png_or_text(awarded):
    plain = awarded.post("/verify", data=awarded.get("/get-achievement-image?achievement_id=1").data,
                         content_type="image/png")
    assert plain.status_code == 422 and plain.get_json()["code"] == "no_credential"
    for text in ["not a jwt", "a.b.c", "", b64url(b"{}") + "." + b64url(b"[1]") + ".x"]:
        response = awarded.post("/verify", json={"credential": text})
        assert response.status_code == 422 and response.get_json()["code"] == "no_credential", text
    missing = awarded.post("/verify", json={})
    assert missing.status_code == 400 and missing.get_json()["code"] == "missing_parameter"


def test_verify_detects_tampering_another_key_and_expiry(awarded, app):
    token = get_jwt(awarded)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))

    changed = dict(claims, name="Something I did not earn")
    tampered = verify(awarded, f"{header}.{b64url(json.dumps(changed).encode())}.{signature}")
    assert tampered["verified"] is False and tampered["checks"]["signature"] == "failed"
    assert tampered["credential"]["name"] == "Something I did not earn"

    # Signed by somebody else's key, claiming our kid: a second library signs it.
    forged = pyjwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                          headers={"typ": "vc+jwt", "kid": pyjwt.get_unverified_header(token)["kid"]})
    assert verify(awarded, forged)["checks"]["signature"] == "failed"

    signer = app.extensions["badge_signer"]
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expired = verify(awarded, signer.sign(dict(claims, validUntil=past)))
    assert expired["verified"] is False and expired["checks"] == {**ALL_OK, "expiry": "expired"}
    elsewhere = verify(awarded, signer.sign(dict(claims, issuer=dict(claims["issuer"], id="https://evil.example"))))
    assert elsewhere["checks"] == {**ALL_OK, "issuer": "unknown"}


def test_removing_an_award_revokes_it_and_a_new_award_is_a_new_credential(awarded, app):
    png = awarded.get(BADGE.format(user=1, achievement=2)).data
    first = verify(awarded, get_jwt(awarded, achievement=2))
    index = int(first["credential"]["credentialStatus"]["statusListIndex"])
    assert bit(status_bits(awarded), index) == 0

    assert awarded.post("/assign-achievements-to-user", json={"user_id": 1, "achievement_list": [1]}).status_code == 200
    revoked = awarded.post("/verify", data=png, content_type="image/png").get_json()
    assert revoked["verified"] is False and revoked["checks"] == {**ALL_OK, "status": "revoked"}
    assert bit(status_bits(awarded), index) == 1
    gone = awarded.get(CREDENTIAL.format(user=1, achievement=2))
    assert gone.status_code == 404 and gone.get_json()["code"] == "credential_not_found"
    assert verify(awarded, get_jwt(awarded, achievement=1))["verified"] is True  # the kept one stays valid

    assert awarded.post("/add-achievement", json={"user_id": 1, "achievement_id": 2}).status_code == 201
    again = verify(awarded, get_jwt(awarded, achievement=2))
    assert again["verified"] is True and again["credential"]["id"] != first["credential"]["id"]
    assert bit(status_bits(awarded), index) == 1  # the old credential stays revoked
    assert count_rows(app, BadgeCredential) == 3


def test_adding_twice_or_reassigning_issues_nothing_new(awarded, app):
    before = get_jwt(awarded)
    assert awarded.post("/add-achievement", json={"user_id": 1, "achievement_id": 1}).status_code == 200
    assert awarded.post("/assign-achievements-to-user", json={"user_id": 1, "achievement_list": [2, 1]}).status_code \
        == 200
    assert get_jwt(awarded) == before
    assert count_rows(app, BadgeCredential) == 2


def test_status_list_is_a_16kb_bitstring_and_unknown_lists_are_404(awarded):
    assert len(status_bits(awarded)) == 16 * 1024
    missing = awarded.get("/status/2")
    assert missing.status_code == 404 and missing.get_json()["code"] == "status_list_not_found"
    assert awarded.get("/status/x").get_json()["code"] == "invalid_parameter"
    signed = awarded.get("/status/1", headers={"Accept": "application/vc+jwt"})
    assert signed.mimetype == "application/vc+jwt"
    claims = pyjwt.decode(signed.data, pyjwt.PyJWK(awarded.get("/.well-known/jwks.json").get_json()["keys"][0]).key,
                          algorithms=["EdDSA"])
    assert claims["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]


def test_credentials_of_what_is_not_held_are_404(awarded):
    for path, code in [(CREDENTIAL.format(user=1, achievement=3), "credential_not_found"),
                       (BADGE.format(user=2, achievement=1), "credential_not_found"),
                       (CREDENTIAL.format(user=99, achievement=1), "user_not_found"),
                       (CREDENTIAL.format(user=1, achievement=99), "achievement_not_found")]:
        response = awarded.get(path)
        assert response.status_code == 404 and response.get_json()["code"] == code, path
    assert awarded.get(CREDENTIAL.format(user="x", achievement=1)).get_json()["code"] == "invalid_parameter"


def test_issuer_url_setting_names_every_absolute_url(make_app, tmp_path):
    client = make_app(BADGE_ISSUER_URL="https://badges.example/", BADGE_ISSUER_NAME="Shop").test_client()
    client.post("/seed-specific")
    client.post("/seedrandom", json={"users": 0, "achievements": 1, "storefronts": 0})
    client.post("/add-achievement", json={"user_id": 1, "achievement_id": 1})
    credential = client.get(CREDENTIAL.format(user=1, achievement=1)).get_json()
    assert credential["issuer"] == {"id": "https://badges.example/issuer", "type": ["Profile"], "name": "Shop",
                                    "url": "https://badges.example"}
    assert credential["credentialStatus"]["statusListCredential"] == "https://badges.example/status/1"


def test_development_key_is_made_once_and_private(make_app, tmp_path):
    first = make_app().test_client().get("/.well-known/jwks.json").get_json()
    key_file = tmp_path / "badge-signing-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert make_app().test_client().get("/.well-known/jwks.json").get_json() == first
    given = make_app(BADGE_SIGNING_KEY=TEST_SIGNING_KEY).test_client().get("/.well-known/jwks.json").get_json()
    assert given != first


def test_production_refuses_to_start_without_a_usable_signing_key(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    schema.upgrade(url)
    config = {"TESTING": True, "APP_ENV": "production", "ADMIN_TOKEN": "t", "CORS_ORIGINS": "https://shop.example",
              "DATABASE_URL": url, "IMAGE_DIR": str(tmp_path / "images")}
    with pytest.raises(SystemExit, match="BADGE_SIGNING_KEY"):
        create_app(config)
    assert not os.path.exists(tmp_path / "badge-signing-key.pem")  # production never makes a key of its own
    with pytest.raises(SystemExit, match="BADGE_SIGNING_KEY"):
        create_app({**config, "BADGE_SIGNING_KEY": "not a key"})
    app = create_app({**config, "BADGE_SIGNING_KEY": TEST_SIGNING_KEY})
    app.extensions["engine"].dispose()


def test_a_credential_whose_award_row_is_gone_reads_as_revoked(awarded, app):
    token = get_jwt(awarded, achievement=1)
    index = int(verify(awarded, token)["credential"]["credentialStatus"]["statusListIndex"])
    with app.extensions["sessionmaker"]() as session:
        session.query(BadgeCredential).filter_by(achievement_id=1).delete()  # as a deleted user's rows would go
        session.commit()
    assert bit(status_bits(awarded), index) == 1
    assert verify(awarded, token)["checks"]["status"] == "revoked"
    assert verify(awarded, get_jwt(awarded, achievement=2))["checks"]["status"] == "active"


@pytest.fixture(params=DATABASES)
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
    else:
        with postgres_schema(postgres_base_url()) as url:
            yield url


def test_upgrading_issues_credentials_for_awards_made_before_badges(empty_url, make_app):
    command.upgrade(schema.alembic_config(empty_url), "0004")
    engine = create_engine(empty_url, poolclass=NullPool)
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    with engine.begin() as connection:  # as version 0004 of the service wrote them
        connection.execute(insert(User.__table__), [{"name": "Ann", "recommendations": {}, "created_at": moment}])
        connection.execute(insert(Achievement.__table__), [{"name": "Early Bird", "description": "First!",
                                                            "occasion": "Holi", "product_type": "tea",
                                                            "created_at": moment}])
        connection.execute(insert(UserAchievement.__table__), [{"user_id": 1, "achievement_id": 1,
                                                                "awarded_at": moment}])
    engine.dispose()
    schema.upgrade(empty_url)
    client = make_app(DATABASE_URL=empty_url).test_client()
    credential = client.get(CREDENTIAL.format(user=1, achievement=1)).get_json()
    assert credential["validFrom"] == "2026-03-04T05:06:07Z" and credential["name"] == "Early Bird"
    assert verify(client, get_jwt(client))["checks"] == ALL_OK
