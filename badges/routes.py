"""The badge routes: a user's credential (JSON, VC-JWT, or with an embedded proof), the baked badge, and every URL a
credential names (issuer, achievement, keys, status lists); and `/verify`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify, request

from badges.credentials import achievement_document, build_credential, held_award, signed_credential
from badges.issuer import OB_CONTEXT, VC_CONTEXT, di_key_document, issuer_document, jwt_key_url
from badges.proofs import as_vc_jwt, with_proof
from badges.signing import badge_keys
from badges.status import last_list, status_list_credential
from badges.verify import CHUNK_KEYWORD, bake, baked_credential, no_credential, verify_embedded, verify_jwt
from core.db import find_achievement, get_session, no_image
from core.errors import ApiError, InvalidParameter, NotFound
from core.params import NestedTooDeep, load_json, parse_id, parse_int, parse_json_object
from core.png import PNG_SIGNATURE

bp = Blueprint("badges", __name__)

# The forms of a credential: `?format=` value -> media type (the first is the default).
FORMATS = {"json": "application/json", "jwt": "application/vc+jwt", "ldp": "application/vc+ld+json"}
JWT_TYPES = ("application/jwt", "application/vc+jwt")


def wanted_format() -> str:
    """`?format=json|jwt|ldp`, else the form the Accept header prefers (JSON when it has no preference)."""
    chosen = request.args.get("format")
    if chosen is not None and chosen not in FORMATS:
        raise InvalidParameter("format", "'format' must be 'json', 'jwt' or 'ldp'.")
    if chosen:
        return chosen
    best = request.accept_mimetypes.best_match(list(FORMATS.values()))
    return next((name for name, media_type in FORMATS.items() if media_type == best), "json")


def vc_response(document: dict, form: str, issued_at: datetime):
    """A credential in the form asked for: as is, as a VC-JWT, or with an embedded proof; it varies with Accept."""
    if form == "jwt":
        response = current_app.response_class(as_vc_jwt(document, issued_at), mimetype=FORMATS["jwt"])
    else:
        response = jsonify(with_proof(document, issued_at) if form == "ldp" else document)
        response.mimetype = FORMATS[form]
    response.vary.add("Accept")
    return response


@bp.get("/users/<user_id>/achievements/<achievement_id>/credential")
def get_credential(user_id: str, achievement_id: str):
    """The user's OpenBadgeCredential for the achievement: JSON, a VC-JWT, or JSON with an embedded proof."""
    form = wanted_format()
    award = held_award(parse_id(user_id, "user_id"), parse_id(achievement_id, "achievement_id"))
    return vc_response(build_credential(award), form, award.row.issued_at)


@bp.get("/users/<user_id>/achievements/<achievement_id>/badge.png")
def get_baked_badge(user_id: str, achievement_id: str):
    """The badge PNG with the VC-JWT baked into an `openbadgecredential` iTXt chunk."""
    ids = parse_id(user_id, "user_id"), parse_id(achievement_id, "achievement_id")
    _credential, token, award = signed_credential(*ids)
    try:
        png = current_app.extensions["image_store"].read(award.achievement.image_sha256 or "")
    except (FileNotFoundError, ValueError):
        raise no_image(award.achievement.id) from None
    baked = bake(png, token)
    response = current_app.response_class(baked, mimetype="image/png")
    response.set_etag(hashlib.sha256(baked).hexdigest())
    response.headers["Cache-Control"] = "public, max-age=300"  # short: the award may be taken away
    return response.make_conditional(request)


@bp.get("/.well-known/jwks.json")
def get_jwks():
    """The VC-JWT key, and the Ed25519 keys that signed VC-JWTs of the earlier form under their thumbprint."""
    keys = badge_keys()
    earlier = [{**key.as_dict(private=False), "kid": kid, "use": "sig", "alg": "EdDSA"}
               for kid, key in keys.earlier_keys().items()]
    response = jsonify({"keys": [keys.public_jwk(jwt_key_url()), *earlier]})
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.get("/keys/<key_name>")
def get_key(key_name: str):
    """A key a credential names: the VC-JWT key as one bare JWK, or the Data Integrity key as a Multikey document."""
    keys = badge_keys()
    if key_name == keys.jwt_key_name:
        response = jsonify(keys.public_jwk(jwt_key_url()))
        response.mimetype = "application/jwk+json"
    elif (document := di_key_document())["id"].endswith(f"/keys/{key_name}"):
        response = jsonify(document)
    else:
        raise NotFound(f"No key is named {key_name!r}.", code="key_not_found")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.get("/issuer")
def get_issuer():
    """The issuer: its Open Badges Profile, which is also the controller document of the Data Integrity key."""
    return jsonify(issuer_document())


@bp.get("/achievements/<achievement_id>")
def get_achievement(achievement_id: str):
    """The Achievement a credential names, as JSON-LD."""
    achievement = find_achievement(parse_id(achievement_id, "achievement_id"))
    return jsonify({"@context": [VC_CONTEXT, OB_CONTEXT], **achievement_document(achievement)})


@bp.get("/status/<status_list>")
def get_status_list(status_list: str):
    """The BitstringStatusListCredential of one list, with an embedded proof; or as a VC-JWT when asked for one."""
    form = wanted_format()
    number = parse_int(status_list, "status_list", 1)
    db = get_session()
    if number > last_list(db):
        raise NotFound(f"No status list {number}.", code="status_list_not_found")
    now = datetime.now(UTC)
    # Unlike a badge, a list is only ever useful signed: its JSON form carries its proof too.
    response = vc_response(status_list_credential(db, number, now), "ldp" if form == "json" else form, now)
    if form == "json":
        response.mimetype = FORMATS["json"]
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


@bp.post("/verify")
def post_verify():
    """Verify a baked PNG, a bare VC-JWT, or a JSON credential with its embedded proof (or `{"credential": ...}`)."""
    body = request.get_data(cache=True)
    if request.mimetype == "image/png" or body.startswith(PNG_SIGNATURE):
        text = baked_credential(body)
        if text is None:
            raise no_credential(f"The PNG has no iTXt chunk '{CHUNK_KEYWORD}'.")
        credential = _baked_json(text) if text.lstrip().startswith("{") else text
    elif request.mimetype in JWT_TYPES:
        try:
            credential = body.decode("utf-8")
        except UnicodeDecodeError:
            raise no_credential("The body is not a VC-JWT (not UTF-8 text).") from None
    else:
        try:
            credential = _credential_in(parse_json_object(body))
        except NestedTooDeep as error:
            raise no_credential(error.message) from None
    if isinstance(credential, dict):
        return jsonify(verify_embedded(get_session(), credential))
    return jsonify(verify_jwt(get_session(), credential))


def _baked_json(text: str) -> dict:
    try:
        credential = load_json(text)
    except ValueError:
        raise no_credential("The PNG's credential is neither a JWT nor a JSON object.") from None
    if not isinstance(credential, dict):
        raise no_credential("The PNG's credential is neither a JWT nor a JSON object.")
    return credential


def _credential_in(body: dict) -> str | dict:
    """`{"credential": "<VC-JWT>"}`, `{"credential": {...}}`, or the credential itself (it has a `proof`)."""
    if "credential" not in body and ("proof" in body or "@context" in body):
        return body
    credential = body.get("credential")
    if credential is None:
        raise ApiError("Send a baked PNG, a VC-JWT, a credential with its proof, or {\"credential\": ...}.",
                       code="missing_parameter", field="credential")
    if not isinstance(credential, str | dict):
        raise ApiError("'credential' must be a VC-JWT (a string) or a credential (an object).",
                       code="invalid_parameter", field="credential")
    return credential
