"""Baking a credential into a badge PNG, and verifying one as any verifier would, from the credential alone."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from sqlalchemy.orm import Session

from badges.issuer import base_url, issuer_profile
from badges.signing import ALG, REGISTRY, signer
from badges.status import LIST_SIZE, last_list, status_bit
from core.errors import ApiError
from core.png import add_text_chunks, read_text_chunk

CHUNK_KEYWORD = "openbadgecredential"


def bake(png: bytes, token: str) -> bytes:
    """The PNG with one iTXt chunk `openbadgecredential` holding the VC-JWT; the pixels stay as they were."""
    return add_text_chunks(png, {CHUNK_KEYWORD: token})


def baked_credential(png: bytes) -> str | None:
    """The VC-JWT in the PNG's `openbadgecredential` iTXt chunk, or None when it has none (or is no PNG)."""
    return read_text_chunk(png, CHUNK_KEYWORD)


def unverified_parts(token: str) -> tuple[dict, dict] | None:
    """The header and claims of a compact JWT, unverified; None when `token` is no JWT with a JSON object claims."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in parts[:2])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def verify(session: Session, token: str) -> dict:
    """Check a VC-JWT the way any verifier would: signature against our JWKS, status list bit, dates, issuer."""
    parts = unverified_parts(token)
    if parts is None:
        raise ApiError("The credential is not a JWT (three base64url parts, JSON header and claims).",
                       status=422, code="no_credential")
    header, claims = parts
    checks = {"signature": _signature(token.strip(), header),
              "status": _status(session, claims),
              "issuer": "ok" if _issuer_id(claims) == issuer_profile()["id"] else "unknown",
              "expiry": _expiry(claims)}
    verified = checks == {"signature": "ok", "status": "active", "issuer": "ok", "expiry": "ok"}
    return {"verified": verified, "checks": checks, "credential": claims}


def _signature(token: str, header: dict) -> str:
    ours = signer()
    if header.get("alg") != ALG or header.get("kid") != ours.kid:
        return "failed"
    try:
        jwt.decode(token, OKPKey.import_key(ours.key.as_dict(private=False)), registry=REGISTRY)
    except (JoseError, ValueError):
        return "failed"
    return "ok"


def _issuer_id(claims: dict) -> object:
    issuer = claims.get("issuer")
    return issuer.get("id") if isinstance(issuer, dict) else issuer


def _status(session: Session, claims: dict) -> str:
    entry = claims.get("credentialStatus")
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


def _expiry(claims: dict) -> str:
    now = datetime.now(UTC)
    try:
        valid_from = datetime.fromisoformat(str(claims.get("validFrom")))
        valid_until = datetime.fromisoformat(str(claims["validUntil"])) if "validUntil" in claims else None
    except ValueError:
        return "expired"
    if valid_from.tzinfo is None or valid_from > now:
        return "expired"
    if valid_until is not None and (valid_until.tzinfo is None or valid_until <= now):
        return "expired"
    return "ok"
