"""Verifiable badges: Open Badges 3.0 credentials signed as VC-JWT (Ed25519), baked into the PNG, verified, revoked.

An award of an achievement is a `BadgeCredential` row; the credential itself is rebuilt from that row whenever it is
asked for (Ed25519 signatures are deterministic, so the same row always gives the same VC-JWT). The row's `serial`
is its place in the revocation lists: list `serial // LIST_SIZE + 1`, bit `serial % LIST_SIZE`.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import logging
import os
import secrets
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flask import Blueprint, Flask, current_app, g, jsonify, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config import Settings
from errors import ApiError, InvalidParameter, NotFound
from image_store import PNG_SIGNATURE, png_chunks
from models import Achievement, BadgeCredential, User, UserAchievement
from params import parse_id, parse_int, parse_json_object
from providers import add_text_chunks

log = logging.getLogger(__name__)
bp = Blueprint("badges", __name__)

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
OB_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
VC_JWT = "application/vc+jwt"
CHUNK_KEYWORD = "openbadgecredential"
# Bitstring Status List: at least 16 KiB of bits per list, so that one bit says little about whose badge it is.
LIST_SIZE = 16 * 1024 * 8
KEY_FILE = "badge-signing-key.pem"
ALG = "EdDSA"

# joserfc flags "EdDSA" as superseded by RFC 9864's "Ed25519" (the same signature); PyJWT and the Open Badges
# verifiers only know "EdDSA", so we keep that name, on a registry of our own that does not warn about it.
_eddsa = copy.copy(JWSRegistry.algorithms[ALG])
_eddsa.security_warning = None


class _Registry(JWSRegistry):
    algorithms = {**JWSRegistry.algorithms, ALG: _eddsa}


REGISTRY = _Registry(algorithms=[ALG])


# --- the signing key ------------------------------------------------------------------------------


def load_key(settings: Settings) -> OKPKey:
    """BADGE_SIGNING_KEY (PEM text, or a path to a PEM file); in development, a key made once under instance/."""
    value = settings.badge_signing_key
    if value:
        pem = value.replace("\\n", "\n")  # a one-line environment variable may carry the PEM's newlines escaped
        try:
            if not pem.lstrip().startswith("-----BEGIN"):
                pem = Path(value).read_text()
            key = OKPKey.import_key(pem)
        except (OSError, ValueError, TypeError, JoseError):
            key = None
        if key is None or key.curve_name != "Ed25519" or not key.is_private:
            raise SystemExit("BADGE_SIGNING_KEY must be an Ed25519 private key: PEM text, or the path of a PEM file")
        return key
    if settings.is_production:
        raise SystemExit("APP_ENV=production needs BADGE_SIGNING_KEY (an Ed25519 private key, PEM) to be set")
    return OKPKey.import_key(_development_key(Path(settings.image_dir).parent / KEY_FILE))


def _development_key(path: Path) -> bytes:
    """The PEM at `path`, made first if missing: readable by us alone, and written whole before it appears."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = OKPKey.generate_key("Ed25519").as_pem(private=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            os.link(tmp, path)  # fails if another worker got there first: then its key is the key
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    log.warning("BADGE_SIGNING_KEY is not set: badges are signed with the development key %s", path)
    return path.read_bytes()


@dataclass(frozen=True)
class Signer:
    key: OKPKey
    kid: str

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK, with its kid, for /.well-known/jwks.json."""
        return {**self.key.as_dict(private=False), "kid": self.kid, "use": "sig", "alg": ALG}

    def sign(self, credential: dict) -> str:
        """The credential as a VC-JWT: its claims set is the credential itself (VC-JOSE-COSE)."""
        header = {"alg": ALG, "typ": "vc+jwt", "kid": self.kid}
        return jwt.encode(header, credential, self.key, registry=REGISTRY)


def init_app(app: Flask, settings: Settings) -> None:
    """Load the signing key (production refuses to start without one); register the routes and the pages."""
    key = load_key(settings)
    app.extensions["badge_signer"] = Signer(key, key.thumbprint())
    app.register_blueprint(bp)
    from pages import pages  # the pages import this module

    app.register_blueprint(pages)


def signer() -> Signer:
    """The app's badge signer."""
    return current_app.extensions["badge_signer"]


# --- issuing and revoking -------------------------------------------------------------------------


def _active(session: Session, user_id: int) -> dict[int, BadgeCredential]:
    rows = session.scalars(select(BadgeCredential).where(
        BadgeCredential.user_id == user_id, BadgeCredential.revoked_at.is_(None)))
    return {row.achievement_id: row for row in rows}


def issue(session: Session, user_id: int, achievement_ids: list[int]) -> None:
    """Issue a credential for each achievement the user has no active credential for (the caller commits)."""
    active = _active(session, user_id)
    for achievement_id in dict.fromkeys(achievement_ids):
        if achievement_id not in active:
            session.add(BadgeCredential(id=str(uuid.uuid4()), user_id=user_id, achievement_id=achievement_id,
                                        salt=secrets.token_hex(16)))


def sync(session: Session, user_id: int, achievement_ids: list[int]) -> None:
    """Make the user's active credentials match `achievement_ids`: revoke the others, issue the missing."""
    now = datetime.now(UTC)
    for achievement_id, row in _active(session, user_id).items():
        if achievement_id not in achievement_ids:
            row.revoked_at = now
    issue(session, user_id, achievement_ids)


def find_credential(session: Session, user_id: int, achievement_id: int) -> BadgeCredential:
    """The user's active credential for the achievement, or 404 credential_not_found."""
    row = session.scalar(select(BadgeCredential).join(
        UserAchievement, (UserAchievement.user_id == BadgeCredential.user_id)
        & (UserAchievement.achievement_id == BadgeCredential.achievement_id),
    ).where(BadgeCredential.user_id == user_id, BadgeCredential.achievement_id == achievement_id,
            BadgeCredential.revoked_at.is_(None)).order_by(BadgeCredential.serial.desc()).limit(1))
    if row is None:
        raise NotFound(f"User {user_id} holds no credential for achievement {achievement_id}.",
                       code="credential_not_found")
    return row


# --- the credential -------------------------------------------------------------------------------


def base_url() -> str:
    """Where this service is reached: BADGE_ISSUER_URL, else the URL of the current request."""
    return current_app.extensions["settings"].badge_issuer_url or request.host_url.rstrip("/")


def issuer_profile() -> dict:
    """The issuer's Open Badges Profile, at this service's base URL."""
    base = base_url()
    return {"id": f"{base}/issuer", "type": ["Profile"],
            "name": current_app.extensions["settings"].badge_issuer_name, "url": base}


def timestamp(moment: datetime) -> str:
    """A UTC timestamp as VC dates write it: seconds, with Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_position(serial: int) -> tuple[int, int]:
    """The status list number and the bit index of a credential's serial."""
    return serial // LIST_SIZE + 1, serial % LIST_SIZE


def identity_hash(user_id: int, salt: str) -> str:
    """The recipient as Open Badges hashes it: sha256 of the identity followed by the salt."""
    return "sha256$" + hashlib.sha256(f"{user_id}{salt}".encode()).hexdigest()


def build_credential(row: BadgeCredential, achievement: Achievement) -> dict:
    """The OpenBadgeCredential of an issued row (W3C VC 2.0 data model, Open Badges 3.0 context)."""
    base = base_url()
    status_list, index = status_position(row.serial)
    return {
        "@context": [VC_CONTEXT, OB_CONTEXT],
        "id": f"urn:uuid:{row.id}",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": achievement.name,
        "issuer": issuer_profile(),
        "validFrom": timestamp(row.issued_at),
        "credentialSubject": {
            "type": ["AchievementSubject"],
            "identifier": [{"type": "IdentityObject", "identityHash": identity_hash(row.user_id, row.salt),
                            "identityType": "systemId", "hashed": True, "salt": row.salt}],
            "achievement": {
                "id": f"{base}/achievements/{achievement.id}",
                "type": ["Achievement"],
                "name": achievement.name,
                "description": achievement.description,
                "criteria": {"narrative": f"Celebrated {achievement.occasion} with a purchase in "
                                          f"{achievement.product_type}."},
                "image": {"id": f"{base}/get-achievement-image?achievement_id={achievement.id}", "type": "Image",
                          "caption": achievement.name},
            },
        },
        "credentialStatus": {
            "id": f"{base}/status/{status_list}#{index}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": "revocation",
            "statusListIndex": str(index),
            "statusListCredential": f"{base}/status/{status_list}",
        },
    }


# --- the status lists -----------------------------------------------------------------------------


def status_bits(session: Session, status_list: int) -> bytes:
    """The list's bitstring: 1 for every serial up to the latest issued that is revoked or has no row any more."""
    first = (status_list - 1) * LIST_SIZE
    last = session.scalar(select(func.max(BadgeCredential.serial)))
    bits = bytearray(LIST_SIZE // 8)
    if last is None or last < first:
        return bytes(bits)
    end = min(last + 1, first + LIST_SIZE)
    active = set(session.scalars(select(BadgeCredential.serial).where(
        BadgeCredential.serial >= first, BadgeCredential.serial < end, BadgeCredential.revoked_at.is_(None))))
    for serial in range(first, end):
        if serial not in active:  # revoked, or gone with its user or achievement: either way, not valid
            index = serial - first
            bits[index // 8] |= 0x80 >> (index % 8)  # index 0 is the left-most bit
    return bytes(bits)


def status_bit(session: Session, serial: int) -> int:
    """One credential's bit, as `status_bits` sets it, without building the whole list (a full one takes ~150 ms)."""
    last = session.scalar(select(func.max(BadgeCredential.serial))) or 0
    active = session.scalar(select(BadgeCredential.serial).where(
        BadgeCredential.serial == serial, BadgeCredential.revoked_at.is_(None)))
    return int(serial <= last and active is None)


def encode_list(bits: bytes) -> str:
    """Multibase base64url (prefix "u", no padding) of the GZIP of the bits."""
    compressed = gzip.compress(bits, mtime=0)
    return "u" + base64.urlsafe_b64encode(compressed).decode("ascii").rstrip("=")


def decode_list(encoded: str) -> bytes:
    """The bits of an `encodedList`."""
    if not encoded.startswith("u"):
        raise ValueError("encodedList is not multibase base64url")
    data = encoded[1:]
    return gzip.decompress(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))


def bit(bits: bytes, index: int) -> int:
    """Bit `index` of a bitstring, index 0 being the left-most bit of the first byte."""
    return (bits[index // 8] >> (7 - index % 8)) & 1


def last_list(session: Session) -> int:
    """The number of the latest status list in use (1 when none is)."""
    return status_position(session.scalar(select(func.max(BadgeCredential.serial))) or 0)[0]


def status_list_credential(session: Session, status_list: int) -> dict:
    """The BitstringStatusListCredential whose bits are the list's revocations."""
    base = base_url()
    return {
        "@context": [VC_CONTEXT],
        "id": f"{base}/status/{status_list}",
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": issuer_profile()["id"],
        "validFrom": timestamp(datetime.now(UTC)),
        "credentialSubject": {
            "id": f"{base}/status/{status_list}#list",
            "type": "BitstringStatusList",
            "statusPurpose": "revocation",
            "encodedList": encode_list(status_bits(session, status_list)),
        },
    }


# --- baking and reading PNG chunks ----------------------------------------------------------------


def bake(png: bytes, token: str) -> bytes:
    """The PNG with one iTXt chunk `openbadgecredential` holding the VC-JWT; the pixels stay as they were."""
    return add_text_chunks(png, {CHUNK_KEYWORD: token})


def baked_credential(png: bytes) -> str | None:
    """The text of the PNG's `openbadgecredential` iTXt chunk, or None when it has none (or is no PNG)."""
    for kind, data, _crc in png_chunks(png):
        if kind == b"iTXt":
            keyword, _, rest = bytes(data).partition(b"\0")
            if keyword == CHUNK_KEYWORD.encode() and len(rest) >= 2:
                compressed, text = rest[0], rest[2:].split(b"\0", 2)[-1]  # skip language and translated keyword
                try:
                    return (zlib.decompress(text) if compressed else text).decode("utf-8")
                except (zlib.error, UnicodeDecodeError):
                    return None
        if kind == b"IEND":
            break
    return None


# --- verifying ------------------------------------------------------------------------------------


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


# --- routes ---------------------------------------------------------------------------------------


def session() -> Session:
    """The request's session: the one main.get_session opens under `g.db` and the app's teardown closes."""
    if "db" not in g:
        g.db = current_app.extensions["sessionmaker"]()
    return g.db


def wants_jwt() -> bool:
    """`?format=jwt` (or `json`), else an Accept header that prefers the VC-JWT to JSON."""
    chosen = request.args.get("format")
    if chosen not in (None, "json", "jwt"):
        raise InvalidParameter("format", "'format' must be 'json' or 'jwt'.")
    if chosen:
        return chosen == "jwt"
    return request.accept_mimetypes.best_match(["application/json", VC_JWT]) == VC_JWT


def held_credential(session: Session, user_id: int, achievement_id: int) -> tuple[BadgeCredential, Achievement]:
    """The active credential and its achievement, or the 404 that says which is missing."""
    if session.get(User, user_id) is None:
        raise NotFound(f"No user has id {user_id}.", code="user_not_found")
    achievement = session.get(Achievement, achievement_id)
    if achievement is None:
        raise NotFound(f"No achievement has id {achievement_id}.", code="achievement_not_found")
    return find_credential(session, user_id, achievement_id), achievement


def signed_credential(user_id: int, achievement_id: int) -> tuple[dict, str, Achievement]:
    """The credential of the user's award, as JSON and as a VC-JWT, with its achievement."""
    row, achievement = held_credential(session(), user_id, achievement_id)
    credential = build_credential(row, achievement)
    return credential, signer().sign(credential), achievement


def vc_response(credential: dict, as_jwt: bool):
    """A credential answered as JSON, or signed as a VC-JWT; it varies with Accept."""
    if as_jwt:
        response = current_app.response_class(signer().sign(credential), mimetype=VC_JWT)
    else:
        response = jsonify(credential)
    response.vary.add("Accept")
    return response


@bp.get("/users/<user_id>/achievements/<achievement_id>/credential")
def get_credential(user_id: str, achievement_id: str):
    """The user's OpenBadgeCredential for the achievement: JSON, or a VC-JWT when asked for one."""
    as_jwt = wants_jwt()
    credential, _token, _achievement = signed_credential(parse_id(user_id, "user_id"),
                                                         parse_id(achievement_id, "achievement_id"))
    return vc_response(credential, as_jwt)


@bp.get("/users/<user_id>/achievements/<achievement_id>/badge.png")
def get_baked_badge(user_id: str, achievement_id: str):
    """The badge PNG with the VC-JWT baked into an `openbadgecredential` iTXt chunk."""
    ids = parse_id(user_id, "user_id"), parse_id(achievement_id, "achievement_id")
    _credential, token, achievement = signed_credential(*ids)
    try:
        png = current_app.extensions["image_store"].read(achievement.image_sha256 or "")
    except (FileNotFoundError, ValueError):
        raise NotFound(f"Achievement {achievement.id} has no image.", code="achievement_not_found") from None
    baked = bake(png, token)
    response = current_app.response_class(baked, mimetype="image/png")
    response.set_etag(hashlib.sha256(baked).hexdigest())
    response.headers["Cache-Control"] = "public, max-age=300"  # short: the award may be taken away
    return response.make_conditional(request)


@bp.get("/.well-known/jwks.json")
def get_jwks():
    """The public keys that badge credentials are signed with."""
    response = jsonify({"keys": [signer().public_jwk()]})
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.get("/issuer")
def get_issuer():
    """The issuer's Open Badges Profile."""
    return jsonify({"@context": [VC_CONTEXT, OB_CONTEXT], **issuer_profile()})


@bp.get("/status/<status_list>")
def get_status_list(status_list: str):
    """The BitstringStatusListCredential of one list: JSON, or a VC-JWT when asked for one."""
    as_jwt = wants_jwt()
    number = parse_int(status_list, "status_list", 1)
    db = session()
    if number > last_list(db):
        raise NotFound(f"No status list {number}.", code="status_list_not_found")
    response = vc_response(status_list_credential(db, number), as_jwt)
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


@bp.post("/verify")
def post_verify():
    """Verify a baked PNG or a `{"credential": "<VC-JWT>"}` body, and say which check failed."""
    body = request.get_data(cache=True)
    if request.mimetype == "image/png" or body.startswith(PNG_SIGNATURE):
        token = baked_credential(body)
        if token is None:
            raise ApiError(f"The PNG has no iTXt chunk '{CHUNK_KEYWORD}'.", status=422, code="no_credential")
    else:
        token = parse_json_object(body).get("credential")
        if token is None:
            raise ApiError("Send a baked PNG, or {\"credential\": \"<VC-JWT>\"}.", code="missing_parameter",
                           field="credential")
        if not isinstance(token, str):
            raise ApiError("'credential' must be a string (a VC-JWT).", code="invalid_parameter", field="credential")
    return jsonify(verify(session(), token))
