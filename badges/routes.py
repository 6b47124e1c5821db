"""The badge routes: a user's credential (JSON or VC-JWT), the baked badge, the keys, the issuer, the status lists
and `/verify`."""

from __future__ import annotations

import hashlib

from flask import Blueprint, current_app, jsonify, request

from badges.credentials import signed_credential
from badges.issuer import OB_CONTEXT, VC_CONTEXT, issuer_profile
from badges.signing import signer
from badges.status import last_list, status_list_credential
from badges.verify import CHUNK_KEYWORD, bake, baked_credential, verify
from core.db import get_session, no_image
from core.errors import ApiError, InvalidParameter, NotFound
from core.params import parse_id, parse_int, parse_json_object
from core.png import PNG_SIGNATURE

bp = Blueprint("badges", __name__)

VC_JWT = "application/vc+jwt"


def wants_jwt() -> bool:
    """`?format=jwt` (or `json`), else an Accept header that prefers the VC-JWT to JSON."""
    chosen = request.args.get("format")
    if chosen not in (None, "json", "jwt"):
        raise InvalidParameter("format", "'format' must be 'json' or 'jwt'.")
    if chosen:
        return chosen == "jwt"
    return request.accept_mimetypes.best_match(["application/json", VC_JWT]) == VC_JWT


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
        raise no_image(achievement.id) from None
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
    db = get_session()
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
    return jsonify(verify(get_session(), token))
