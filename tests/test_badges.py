"""Open Badges 3.0 credentials: their shape, the VC-JWT (OB 3.0 section 8.2) checked by a second library with the key
its `kid` answers, the embedded proof, baking, verifying (the earlier form too), revoking, and every URL they name."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import struct
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema_rs
import jwt as pyjwt
import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt
from joserfc.jwk import OKPKey
from sqlalchemy import create_engine, insert
from sqlalchemy.pool import NullPool

from badges import dataintegrity, rdfc
from badges.proofs import as_vc_jwt
from badges.signing import REGISTRY
from badges.verify import bake
from conftest import (
    DATABASES,
    PRODUCTION_BADGES,
    TEST_JWT_KEY,
    TEST_SIGNING_KEY,
    count_rows,
    png_size,
    postgres_base_url,
    postgres_schema,
    private_pem,
)
from core import schema
from core.errors import ConfigError
from main import create_app
from models import Achievement, BadgeCredential, UserAchievement

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "open_badge_credential.json").read_text())
CREDENTIAL = "/users/{user}/achievements/{achievement}/credential"
BADGE = "/users/{user}/achievements/{achievement}/badge.png"
ALL_OK = {"signature": "ok", "status": "active", "issuer": "ok", "expiry": "ok"}
REGISTERED_CLAIMS = {"iss", "jti", "sub", "nbf", "exp", "iat"}


@pytest.fixture
def awarded(client, users):
    """User 1 holds achievement 1 (added) and 2 (assigned); achievement 3 exists but is not theirs."""
    assert client.post("/seedrandom", json={"users": 0, "achievements": 3, "storefronts": 0}).status_code == 201
    assert client.post("/add-achievement", json={"user_id": 1, "achievement_id": 1}).status_code == 201
    assert client.post("/assign-achievements-to-user", json={"user_id": 1, "achievement_list": [1, 2]}).status_code \
        == 200
    return client


def get_ldp(client, user=1, achievement=1) -> dict:
    response = client.get(CREDENTIAL.format(user=user, achievement=achievement),
                          headers={"Accept": "application/vc+ld+json"})
    assert response.status_code == 200, response.get_json()
    assert response.mimetype == "application/vc+ld+json"
    return response.get_json()


def fetch(client, url: str):
    """GET an absolute URL of the service through the test client."""
    parts = urlsplit(url)
    return client.get(parts.path + (f"?{parts.query}" if parts.query else ""))


def jwt_claims(client, token: str) -> dict:
    """The claims of a VC-JWT checked as OB 3.0 section 8.2 says, by PyJWT, with the key its `kid` answers."""
    header = pyjwt.get_unverified_header(token)
    assert set(header) == {"alg", "typ", "kid"} and header["typ"] == "JWT"
    answer = fetch(client, header["kid"])
    assert answer.status_code == 200 and answer.mimetype == "application/jwk+json"
    jwk = answer.get_json()
    assert "keys" not in jwk and "d" not in jwk and jwk["kid"] == header["kid"]
    claims = pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=[header["alg"]], options={"require": [
        "iss", "jti", "sub", "nbf", "iat"]})
    credential = {name: value for name, value in claims.items() if name not in REGISTERED_CLAIMS}
    seconds = int(datetime.fromisoformat(credential["validFrom"]).timestamp())
    assert (claims["iss"], claims["jti"], claims["sub"], claims["nbf"]) == (
        credential["issuer"]["id"] if isinstance(credential["issuer"], dict) else credential["issuer"],
        credential["id"], credential["credentialSubject"]["id"], seconds)
    assert ("exp" in claims) == ("validUntil" in credential)
    return claims


def sign(app, credential: dict) -> str:
    """The credential signed as the service signs, for documents it would never issue (expired, elsewhere)."""
    with app.test_request_context():
        return as_vc_jwt(credential, datetime.now(UTC))


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
                                    "url": "http://localhost/gallery"}
    assert "proof" not in credential  # the plain JSON form; ?format=ldp carries the proof
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


def test_the_subject_id_is_stable_opaque_and_per_issuer(awarded, make_app, database_url):
    first = awarded.get(CREDENTIAL.format(user=1, achievement=1)).get_json()["credentialSubject"]["id"]
    second = awarded.get(CREDENTIAL.format(user=1, achievement=2)).get_json()["credentialSubject"]["id"]
    assert first == second and uuid.UUID(first.removeprefix("urn:uuid:")).version == 5
    assert awarded.post("/add-achievement", json={"user_id": 2, "achievement_id": 1}).status_code == 201
    assert awarded.get(CREDENTIAL.format(user=2, achievement=1)).get_json()["credentialSubject"]["id"] != first
    # Nothing a guesser knows (the user's id, the issuer) gives it.
    issuer = uuid.uuid5(uuid.NAMESPACE_URL, "http://localhost/issuer")
    assert first not in {f"urn:uuid:{uuid.uuid5(namespace, name)}" for namespace in (issuer, uuid.NAMESPACE_URL)
                         for name in ("1", "user:1", "http://localhost/users/1")}
    elsewhere = make_app(PUBLIC_BASE_URL="https://badges.example").test_client()
    assert elsewhere.get(CREDENTIAL.format(user=1, achievement=1)).get_json()["credentialSubject"]["id"] != first


def test_the_vc_jwt_follows_section_8_2_and_verifies_with_pyjwt_and_the_key_its_kid_answers(awarded):
    token = get_jwt(awarded)
    assert token == awarded.get(CREDENTIAL.format(user=1, achievement=1) + "?format=jwt").get_data(as_text=True)
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    assert header["kid"].startswith("http://localhost/keys/")
    claims = jwt_claims(awarded, token)
    credential = awarded.get(CREDENTIAL.format(user=1, achievement=1)).get_json()
    assert {name: value for name, value in claims.items() if name not in REGISTERED_CLAIMS} == credential
    assert claims["iat"] == claims["nbf"]  # issued when awarded, so the same award always gives the same token
    assert [key["kid"] for key in awarded.get("/.well-known/jwks.json").get_json()["keys"]][0] == header["kid"]
    jwk = fetch(awarded, header["kid"]).get_json()
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), pyjwt.PyJWK(jwk).key,
                     algorithms=["RS256"])


@pytest.mark.parametrize(("key", "algorithm", "kty"), [
    (private_pem(ec.generate_private_key(ec.SECP256R1())), "ES256", "EC"), (TEST_SIGNING_KEY, "EdDSA", "OKP")])
def test_the_vc_jwt_algorithm_follows_the_key_type(make_app, key, algorithm, kty):
    client = make_app(BADGE_SIGNING_KEY=key).test_client()
    client.post("/seed-specific")
    client.post("/seedrandom", json={"users": 0, "achievements": 1, "storefronts": 0})
    client.post("/add-achievement", json={"user_id": 1, "achievement_id": 1})
    token = get_jwt(client)
    assert pyjwt.get_unverified_header(token)["alg"] == algorithm
    assert fetch(client, pyjwt.get_unverified_header(token)["kid"]).get_json()["kty"] == kty
    jwt_claims(client, token)
    assert verify(client, token)["checks"] == ALL_OK


def test_the_embedded_proof_form_verifies_and_names_keys_that_answer(awarded):
    signed = get_ldp(awarded)
    plain = awarded.get(CREDENTIAL.format(user=1, achievement=1)).get_json()
    assert {k: v for k, v in signed.items() if k != "proof"} == plain
    assert awarded.get(CREDENTIAL.format(user=1, achievement=1) + "?format=ldp").get_json() == signed  # the same bytes
    [proof] = signed["proof"]
    assert proof["type"] == "DataIntegrityProof" and proof["cryptosuite"] == "eddsa-rdfc-2022"
    assert proof["proofPurpose"] == "assertionMethod" and proof["created"] == signed["validFrom"]
    assert "#" not in proof["verificationMethod"]
    method = fetch(awarded, proof["verificationMethod"])
    assert method.status_code == 200
    method = method.get_json()
    assert method["type"] == "Multikey" and method["id"] == proof["verificationMethod"]
    assert method["controller"] == signed["issuer"]["id"] and method["publicKeyMultibase"].startswith("z6Mk")
    controller = fetch(awarded, method["controller"]).get_json()
    assert controller["@context"][0] == "https://www.w3.org/ns/did/v1"
    assert controller["assertionMethod"] == [method["id"]] and controller["type"] == ["Profile"]
    # Checked with the key the method answers, not the service's own.
    public = dataintegrity.public_key_from_multibase(method["publicKeyMultibase"])
    assert dataintegrity.verify_proof(signed, public, rdfc.Canonicalizer())
    assert not dataintegrity.verify_proof({**signed, "name": "Something else"}, public, rdfc.Canonicalizer())

    for body in [signed, {"credential": signed}]:
        result = awarded.post("/verify", json=body).get_json()
        assert result["verified"] is True and result["proof"] == "eddsa-rdfc-2022" and result["checks"] == ALL_OK
    tampered = verify_body(awarded, {**signed, "name": "Something I did not earn"})
    assert tampered["verified"] is False and tampered["checks"] == {**ALL_OK, "signature": "failed"}
    undefined = verify_body(awarded, {**signed, "nickname": "a term no context defines"})
    assert undefined["checks"]["signature"] == "failed"
    unsigned = awarded.post("/verify", json=plain)
    assert unsigned.status_code == 422 and unsigned.get_json()["code"] == "no_credential"
    # Open Badges also lets a PNG carry the JSON credential itself.
    png = bake(awarded.get("/get-achievement-image?achievement_id=1").data, json.dumps(signed))
    baked = awarded.post("/verify", data=png, content_type="image/png").get_json()
    assert baked["proof"] == "eddsa-rdfc-2022" and baked["verified"] is True


def verify_body(client, body) -> dict:
    response = client.post("/verify", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_every_url_a_credential_names_answers(awarded):
    credential = get_ldp(awarded)
    achievement = credential["credentialSubject"]["achievement"]
    urls = [credential["issuer"]["id"], credential["issuer"]["url"], achievement["id"], achievement["image"]["id"],
            credential["credentialStatus"]["statusListCredential"], credential["proof"][0]["verificationMethod"],
            pyjwt.get_unverified_header(get_jwt(awarded))["kid"]]
    for url in urls:
        assert url.startswith("http://localhost/")
        assert fetch(awarded, url).status_code == 200, url
    answered = fetch(awarded, achievement["id"]).get_json()
    assert answered == {"@context": credential["@context"], **achievement}
    missing = awarded.get("/achievements/99")
    assert missing.status_code == 404 and missing.get_json()["code"] == "achievement_not_found"
    unknown = awarded.get("/keys/nope")
    assert unknown.status_code == 404 and unknown.get_json()["code"] == "key_not_found"


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


def test_verify_accepts_the_baked_png_and_the_jwt_wrapped_or_bare(awarded):
    png = awarded.get(BADGE.format(user=1, achievement=1)).data
    from_png = awarded.post("/verify", data=png, content_type="image/png")
    assert from_png.status_code == 200
    body = from_png.get_json()
    assert body["verified"] is True and body["checks"] == ALL_OK and body["proof"] == "jwt"
    assert body["credential"] == awarded.get(CREDENTIAL.format(user=1, achievement=1)).get_json()
    token = get_jwt(awarded)
    assert verify(awarded, token) == body
    for content_type in ["application/jwt", "application/vc+jwt"]:
        bare = awarded.post("/verify", data=token, content_type=content_type)
        assert bare.status_code == 200 and bare.get_json() == body
    not_text = awarded.post("/verify", data=b"\xff\xfe.\x00", content_type="application/jwt")
    assert not_text.status_code == 422 and not_text.get_json()["code"] == "no_credential"


def test_verify_says_no_credential_for_a_plain_png_or_text(awarded):
    plain = awarded.post("/verify", data=awarded.get("/get-achievement-image?achievement_id=1").data,
                         content_type="image/png")
    assert plain.status_code == 422 and plain.get_json()["code"] == "no_credential"
    for text in ["not a jwt", "a.b.c", "", b64url(b"{}") + "." + b64url(b"[1]") + ".x"]:
        response = awarded.post("/verify", json={"credential": text})
        assert response.status_code == 422 and response.get_json()["code"] == "no_credential", text
    missing = awarded.post("/verify", json={})
    assert missing.status_code == 400 and missing.get_json()["code"] == "missing_parameter"
    wrong = awarded.post("/verify", json={"credential": 5})
    assert wrong.status_code == 400 and wrong.get_json()["code"] == "invalid_parameter"


def test_verify_detects_tampering_another_key_and_expiry(awarded, app):
    token = get_jwt(awarded)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))

    changed = dict(claims, name="Something I did not earn")
    tampered = verify(awarded, f"{header}.{b64url(json.dumps(changed).encode())}.{signature}")
    assert tampered["verified"] is False and tampered["checks"]["signature"] == "failed"
    assert tampered["credential"]["name"] == "Something I did not earn"

    # Signed by somebody else's key, claiming our kid: a second library signs it.
    kid = pyjwt.get_unverified_header(token)["kid"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = pyjwt.encode(claims, other, algorithm="RS256", headers={"typ": "JWT", "kid": kid})
    assert verify(awarded, forged)["checks"]["signature"] == "failed"
    unsigned = pyjwt.encode(claims, None, algorithm="none", headers={"typ": "JWT", "kid": kid})
    assert verify(awarded, unsigned)["checks"]["signature"] == "failed"
    # Our signature, but claims that say something else than the credential (section 8.2.6.1).
    with app.test_request_context():
        keys = app.extensions["badge_keys"]
        rebound = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": kid}, dict(claims, sub="urn:uuid:other"),
                             keys.jwt, registry=REGISTRY)
    assert verify(awarded, rebound)["checks"]["signature"] == "failed"

    credential = {name: value for name, value in claims.items() if name not in REGISTERED_CLAIMS}
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expired = verify(awarded, sign(app, dict(credential, validUntil=past)))
    assert expired["verified"] is False and expired["checks"] == {**ALL_OK, "expiry": "expired"}
    elsewhere = verify(awarded, sign(app, dict(credential, issuer=dict(credential["issuer"], id="https://evil.example"))))
    assert elsewhere["checks"] == {**ALL_OK, "issuer": "unknown"}


def earlier_form(key_pem: str, credential: dict) -> str:
    """A VC-JWT as the earlier version issued it: EdDSA, `typ` vc+jwt, `kid` the key's thumbprint, the claims set
    the credential itself (no subject id, no registered claims). Signed here by PyJWT."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    public = pyjwt.PyJWK.from_json(pyjwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    old = {**credential, "issuer": {**credential["issuer"], "url": "http://localhost"},
           "credentialSubject": {k: v for k, v in credential["credentialSubject"].items() if k != "id"}}
    thumbprint = OKPKey.import_key(public.key.public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)).thumbprint()
    return pyjwt.encode(old, key, algorithm="EdDSA", headers={"typ": "vc+jwt", "kid": thumbprint})


@pytest.mark.parametrize("kept_as", ["BADGE_DI_SIGNING_KEY", "BADGE_SIGNING_KEY"])
def test_credentials_of_the_earlier_form_keep_verifying(make_app, kept_as):
    # An upgrade keeps the Ed25519 key: as the Data Integrity key (the README's advice), or as the VC-JWT key.
    client = make_app(**{kept_as: TEST_SIGNING_KEY}).test_client()
    client.post("/seed-specific")
    client.post("/seedrandom", json={"users": 0, "achievements": 1, "storefronts": 0})
    client.post("/add-achievement", json={"user_id": 1, "achievement_id": 1})
    old = earlier_form(TEST_SIGNING_KEY, client.get(CREDENTIAL.format(user=1, achievement=1)).get_json())
    result = verify(client, old)
    assert result["verified"] is True and result["checks"] == ALL_OK and result["proof"] == "jwt"
    # Its kid is still in the key set, as the earlier version published it.
    kid = pyjwt.get_unverified_header(old)["kid"]
    listed = {key["kid"]: key for key in client.get("/.well-known/jwks.json").get_json()["keys"]}
    pyjwt.decode(old, pyjwt.PyJWK(listed[kid]).key, algorithms=["EdDSA"])
    # Re-downloaded, the badge has the new form.
    assert pyjwt.get_unverified_header(get_jwt(client))["typ"] == "JWT"
    assert verify(client, earlier_form(private_pem(Ed25519PrivateKey.generate()), result["credential"]))[
        "checks"]["signature"] == "failed"


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


def test_status_list_is_a_16kb_bitstring_signed_in_both_forms_and_unknown_lists_are_404(awarded):
    assert len(status_bits(awarded)) == 16 * 1024
    missing = awarded.get("/status/2")
    assert missing.status_code == 404 and missing.get_json()["code"] == "status_list_not_found"
    assert awarded.get("/status/x").get_json()["code"] == "invalid_parameter"
    listed = awarded.get("/status/1")
    assert listed.mimetype == "application/json"
    status_list = listed.get_json()
    assert status_list["issuer"] == "http://localhost/issuer"
    [proof] = status_list["proof"]
    assert proof["cryptosuite"] == "eddsa-rdfc-2022" and proof["verificationMethod"] == get_ldp(awarded)["proof"][0][
        "verificationMethod"]
    method = fetch(awarded, proof["verificationMethod"]).get_json()
    assert dataintegrity.verify_proof(status_list, dataintegrity.public_key_from_multibase(
        method["publicKeyMultibase"]), rdfc.Canonicalizer())
    assert datetime.fromisoformat(status_list["validFrom"]) < datetime.now(UTC) - timedelta(minutes=1)
    signed = awarded.get("/status/1", headers={"Accept": "application/vc+jwt"})
    assert signed.mimetype == "application/vc+jwt"
    claims = jwt_claims(awarded, signed.get_data(as_text=True))
    assert claims["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
    assert claims["credentialSubject"] == {k: v for k, v in status_list["credentialSubject"].items()}


def test_credentials_of_what_is_not_held_are_404(awarded):
    for path, code in [(CREDENTIAL.format(user=1, achievement=3), "credential_not_found"),
                       (BADGE.format(user=2, achievement=1), "credential_not_found"),
                       (CREDENTIAL.format(user=99, achievement=1), "user_not_found"),
                       (CREDENTIAL.format(user=1, achievement=99), "achievement_not_found")]:
        response = awarded.get(path)
        assert response.status_code == 404 and response.get_json()["code"] == code, path
    assert awarded.get(CREDENTIAL.format(user="x", achievement=1)).get_json()["code"] == "invalid_parameter"
    assert awarded.get(CREDENTIAL.format(user=1, achievement=1) + "?format=xml").get_json()["code"] == \
        "invalid_parameter"


@pytest.mark.parametrize("name", ["PUBLIC_BASE_URL", "BADGE_ISSUER_URL"])
def test_the_public_base_url_names_every_absolute_url(make_app, name):
    client = make_app(**{name: "https://badges.example/", "BADGE_ISSUER_NAME": "Shop"}).test_client()
    client.post("/seed-specific")
    client.post("/seedrandom", json={"users": 0, "achievements": 1, "storefronts": 0})
    client.post("/add-achievement", json={"user_id": 1, "achievement_id": 1})
    credential = client.get(CREDENTIAL.format(user=1, achievement=1) + "?format=ldp").get_json()
    assert credential["issuer"] == {"id": "https://badges.example/issuer", "type": ["Profile"], "name": "Shop",
                                    "url": "https://badges.example/gallery"}
    assert credential["credentialStatus"]["statusListCredential"] == "https://badges.example/status/1"
    assert credential["proof"][0]["verificationMethod"].startswith("https://badges.example/keys/z6Mk")
    assert pyjwt.get_unverified_header(get_jwt(client))["kid"].startswith("https://badges.example/keys/")


def test_the_public_base_url_must_be_an_absolute_http_url(make_app):
    for value in ["badges.example", "ftp://badges.example", "https://", "https://badges.example/?a=1"]:
        with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
            make_app(PUBLIC_BASE_URL=value)
    assert make_app(PUBLIC_BASE_URL="https://badges.example/", BADGE_ISSUER_URL="https://old.example").extensions[
        "settings"].public_base_url == "https://badges.example"


def test_development_keys_are_made_once_and_private(make_app, tmp_path):
    first = make_app(BADGE_SIGNING_KEY=None).test_client().get("/.well-known/jwks.json").get_json()
    assert first["keys"][0]["kty"] == "RSA" and first["keys"][0]["alg"] == "RS256"
    for name in ["badge-jwt-key.pem", "badge-signing-key.pem"]:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert make_app(BADGE_SIGNING_KEY=None).test_client().get("/.well-known/jwks.json").get_json() == first
    given = make_app(BADGE_SIGNING_KEY=TEST_JWT_KEY).test_client().get("/.well-known/jwks.json").get_json()
    assert given != first


def test_production_refuses_to_start_without_its_keys_and_public_url(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    schema.upgrade(url)
    config = {"TESTING": True, "APP_ENV": "production", "ADMIN_TOKEN": "t", "CORS_ORIGINS": "https://shop.example",
              "DATABASE_URL": url, "IMAGE_DIR": str(tmp_path / "images"), **PRODUCTION_BADGES}
    for name in PRODUCTION_BADGES:
        with pytest.raises(SystemExit, match=name):
            create_app({**config, name: None})
    assert not list(tmp_path.glob("*.pem"))  # production never makes a key of its own
    for name, value in [("BADGE_SIGNING_KEY", "not a key"), ("BADGE_DI_SIGNING_KEY", TEST_JWT_KEY),
                        ("BADGE_SIGNING_KEY", private_pem(ec.generate_private_key(ec.SECP384R1())))]:
        with pytest.raises(SystemExit, match=name):
            create_app({**config, name: value})
    key_file = tmp_path / "jwt.pem"
    key_file.write_text(TEST_JWT_KEY)
    app = create_app({**config, "BADGE_SIGNING_KEY": str(key_file)})  # a path works as well as the PEM
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
        # Only the columns of then: User.__table__ would also fill in later ones (the subject key of 0006).
        users = sa.table("users", sa.column("name"), sa.column("recommendations", sa.JSON), sa.column("created_at"))
        connection.execute(insert(users), [{"name": "Ann", "recommendations": {}, "created_at": moment}])
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
    assert credential["credentialSubject"]["id"].startswith("urn:uuid:")  # 0006 gave the user a subject key
    assert verify(client, get_jwt(client))["checks"] == ALL_OK
