"""Baking a credential into a badge PNG, and verifying one as any verifier would, from the credential alone: a VC-JWT
(OB 3.0 section 8.2, or the earlier form: EdDSA, `kid` a bare thumbprint), or a credential with an embedded
eddsa-rdfc-2022 proof."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from joserfc import jwt
from joserfc.errors import JoseError
from pyld.jsonld import JsonLdError
from sqlalchemy.orm import Session

from badges.dataintegrity import CRYPTOSUITE, single_proof, verify_proof
from badges.issuer import di_key_url, issuer_id, jwt_key_url
from badges.rdfc import canonicalizer
from badges.signing import REGISTRY, badge_keys, numeric_date
from badges.status import LIST_SIZE, last_list, status_bit
from core.errors import ApiError
from core.http_edge import base_url
from core.params import load_json
from core.png import add_text_chunks, read_text_chunk

CHUNK_KEYWORD = "openbadgecredential"
JWT_CLAIMS = ("iss", "jti", "sub", "nbf", "exp", "iat")
# What PyLD may raise on a document it cannot read: a credential sent to /verify is anybody's JSON, and is then
# simply not verified (UnsafeDocument and UnicodeError are ValueErrors).
UNREADABLE = (JsonLdError, ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)


def bake(png: bytes, token: str) -> bytes:
    """The PNG with one iTXt chunk `openbadgecredential` holding the VC-JWT; the pixels stay as they were."""
    return add_text_chunks(png, {CHUNK_KEYWORD: token})


def baked_credential(png: bytes) -> str | None:
    """The text of the PNG's `openbadgecredential` iTXt chunk (a VC-JWT, or a JSON credential), or None; 422
    no_credential when the chunk cannot be read (compressed past 1 MiB, not zlib, not UTF-8)."""
    try:
        return read_text_chunk(png, CHUNK_KEYWORD)
    except ValueError as error:
        raise no_credential(f"The PNG's iTXt chunk '{CHUNK_KEYWORD}' cannot be read: {error}.") from None


def no_credential(message: str) -> ApiError:
    return ApiError(message, status=422, code="no_credential")


def unverified_parts(token: str) -> tuple[dict, dict] | None:
    """The header and claims of a compact JWT, unverified; None when `token` is no JWT with a JSON object claims."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = (load_json(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in parts[:2])
    except ValueError:  # UnicodeDecodeError and NestedTooDeep too
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def verify_jwt(session: Session, token: str) -> dict:
    """Check a VC-JWT: its signature and claims, its status list bit, its dates, its issuer."""
    parts = unverified_parts(token)
    if parts is None:
        raise no_credential("The credential is not a JWT (three base64url parts, JSON header and claims).")
    header, claims = parts
    credential = {name: value for name, value in claims.items() if name not in JWT_CLAIMS}
    return _result(session, "jwt", _jwt_signature(token.strip(), header, claims, credential), credential)


def verify_embedded(session: Session, document: dict) -> dict:
    """Check a credential with an embedded eddsa-rdfc-2022 proof: the proof, the status bit, the dates, the issuer."""
    proof = single_proof(document)
    if proof is None:
        raise no_credential("The credential has no embedded proof (send it with its `proof`, or as a VC-JWT).")
    signature = "failed"
    if (proof.get("cryptosuite") == CRYPTOSUITE and proof.get("proofPurpose") == "assertionMethod"
            and proof.get("verificationMethod") == di_key_url()):
        try:
            signature = "ok" if verify_proof(document, badge_keys().di.private_key.public_key(), canonicalizer()) \
                else "failed"
        except UNREADABLE:
            pass
    return _result(session, CRYPTOSUITE, signature, document)


def _result(session: Session, proof: str, signature: str, credential: dict) -> dict:
    checks = {"signature": signature, "status": _status(session, credential),
              "issuer": "ok" if _issuer_id(credential) == issuer_id() else "unknown", "expiry": _expiry(credential)}
    verified = checks == {"signature": "ok", "status": "active", "issuer": "ok", "expiry": "ok"}
    return {"verified": verified, "proof": proof, "checks": checks, "credential": credential}


def _jwt_signature(token: str, header: dict, claims: dict, credential: dict) -> str:
    keys = badge_keys()
    if header.get("kid") == jwt_key_url() and header.get("alg") == keys.algorithm \
            and header.get("typ", "JWT") == "JWT" and set(header) <= {"alg", "typ", "kid"}:
        key, bound = keys.jwt, _claims_match(claims, credential)
    elif header.get("kid") in keys.earlier_keys() and header.get("alg") == "EdDSA":
        key, bound = keys.earlier_keys()[header["kid"]], True  # the earlier form: the claims are the credential
    else:
        return "failed"
    try:
        jwt.decode(token, key, registry=REGISTRY)
    except (JoseError, ValueError):
        return "failed"
    return "ok" if bound else "failed"


def _claims_match(claims: dict, credential: dict) -> bool:
    """Section 8.2.6.1: each registered claim says what the credential says."""
    try:
        expected = {"iss": _issuer_id(credential), "jti": credential.get("id"),
                    "sub": (credential.get("credentialSubject") or {}).get("id"),
                    "nbf": numeric_date(credential["validFrom"]),
                    "exp": numeric_date(credential["validUntil"]) if "validUntil" in credential else None}
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return all(claims.get(name) == value for name, value in expected.items())


def _issuer_id(credential: dict) -> object:
    issuer = credential.get("issuer")
    return issuer.get("id") if isinstance(issuer, dict) else issuer


def _status(session: Session, credential: dict) -> str:
    entry = credential.get("credentialStatus")
    prefix = f"{base_url()}/status/"
    if not isinstance(entry, dict) or entry.get("statusPurpose") != "revocation":
        return "unknown"
    url, index = entry.get("statusListCredential"), entry.get("statusListIndex")
    if not isinstance(url, str) or not url.startswith(prefix) or not isinstance(index, str):
        return "unknown"
    try:
        status_list, position = int(url[len(prefix):]), int(index)
    except ValueError:
        return "unknown"
    if not 1 <= status_list <= last_list(session) or not 0 <= position < LIST_SIZE:
        return "unknown"
    return "revoked" if status_bit(session, (status_list - 1) * LIST_SIZE + position) else "active"


def _expiry(credential: dict) -> str:
    now = datetime.now(UTC)
    try:
        valid_from = datetime.fromisoformat(str(credential.get("validFrom")))
        valid_until = datetime.fromisoformat(str(credential["validUntil"])) if "validUntil" in credential else None
    except ValueError:
        return "expired"
    if valid_from.tzinfo is None or valid_from > now:
        return "expired"
    if valid_until is not None and (valid_until.tzinfo is None or valid_until <= now):
        return "expired"
    return "ok"
