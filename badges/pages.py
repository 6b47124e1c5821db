"""Server-rendered pages for people: a badge's share page (with its Open Graph card) and the gallery."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from flask import Blueprint, current_app, jsonify, render_template, request, url_for
from sqlalchemy import select, update

import local_image_gen
from badges.credentials import signed_credential
from badges.verify import verify_jwt
from core.cpu import cpu_bound
from core.db import get_session
from core.errors import ApiError
from core.http_edge import base_url, inline_hash, page_headers
from core.params import parse_id, parse_int
from models import Achievement, BadgeCredential, Storefront, image_src

pages = Blueprint("pages", __name__, template_folder="templates")

PER_PAGE = 12
MAX_PAGE = 10_000
TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.cache
def policy() -> str:
    """The pages' Content-Security-Policy: everything from this service, no script at all, and only the one inline
    style sheet of base.html (by its hash: no other inline style applies)."""
    style = re.search(r"<style>(.*?)</style>", (TEMPLATES / "base.html").read_text(encoding="utf-8"), re.S)[1]
    return f"default-src 'none'; img-src 'self'; style-src {inline_hash(style)}; form-action 'none'"


@pages.after_request
def add_page_headers(response):
    """Every page: the policy above with the other HTML headers, and no caching of the verdict."""
    response.headers.setdefault("Cache-Control", "no-cache")  # the verification line may change at any time
    return page_headers(response, policy())


@pages.context_processor
def site() -> dict:
    """The site name the templates show."""
    return {"site_name": current_app.extensions["settings"].badge_issuer_name}


@pages.errorhandler(ApiError)
def page_error(error: ApiError):
    """An error page for a browser, the usual JSON error for every other client."""
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        html = render_template("error.html", error=error, title="Not found" if error.status == 404 else "Error")
        return html, error.status, {**error.headers, "Content-Type": "text/html; charset=utf-8"}
    return jsonify(error.to_dict()), error.status, error.headers


def absolute(path: str) -> str:
    """`path` as an absolute URL, on PUBLIC_BASE_URL when set."""
    return base_url() + path


def share_card(achievement: Achievement) -> str:
    """The hash of the achievement's 1200x630 link-preview card (its badge, name and occasion): drawn on the first
    request for it, stored like any image, and found in its row ever after, never drawn per request."""
    if achievement.share_card_sha256:
        return achievement.share_card_sha256
    store = current_app.extensions["image_store"]
    try:
        badge = store.read(achievement.image_sha256) if achievement.image_sha256 else None
    except FileNotFoundError:
        badge = None
    card = cpu_bound(local_image_gen.share_card, badge, achievement.name, achievement.occasion,
                     current_app.extensions["settings"].badge_issuer_name)
    with current_app.extensions["sessionmaker"]() as session:
        with store.saving(session) as put:
            stored = put(card, size=local_image_gen.CARD_SIZE)
            # The first request's card wins; the same facts draw the same bytes, so a second one is the same file.
            session.execute(update(Achievement).where(Achievement.id == achievement.id,
                                                      Achievement.share_card_sha256.is_(None))
                            .values(share_card_sha256=stored.sha256))
            kept = session.scalar(select(Achievement.share_card_sha256).where(Achievement.id == achievement.id))
        if kept != stored.sha256:
            store.remove_unused(session, [stored.sha256])
    return kept


@pages.get("/share/<user_id>/<achievement_id>")
def share(user_id: str, achievement_id: str):
    """The share page of a user's badge: the badge, its words, whether it verifies, and its link-preview tags."""
    ids = {"user_id": parse_id(user_id, "user_id"), "achievement_id": parse_id(achievement_id, "achievement_id")}
    credential, token, award = signed_credential(*ids.values())
    achievement = award.achievement
    card = share_card(achievement)
    result = verify_jwt(get_session(), token)  # what any verifier would conclude from the badge alone
    links = {
        "badge": url_for("badges.get_baked_badge", **ids),
        "credential": url_for("badges.get_credential", **ids),
        "jwt": url_for("badges.get_credential", **ids, format="jwt"),
    }
    return render_template(
        "share.html", achievement=achievement, credential=credential, result=result, links=links,
        issued=credential["validFrom"][:10], issuer=credential["issuer"],
        og={"title": f"{achievement.name}: a badge from {credential['issuer']['name']}",
            "description": achievement.description, "image": absolute(image_src(card)),
            "url": absolute(url_for("pages.share", **ids)),
            "image_alt": f"The {achievement.name} badge, for {achievement.occasion}",
            "image_size": local_image_gen.CARD_SIZE},
    )


@pages.get("/gallery")
def gallery():
    """The latest storefronts and badges, newest first, `PER_PAGE` of each per page."""
    page = parse_int(request.args.get("page", "1"), "page", 1, MAX_PAGE)
    offset = (page - 1) * PER_PAGE
    session = get_session()
    storefronts = list(session.scalars(
        select(Storefront).order_by(Storefront.id.desc()).offset(offset).limit(PER_PAGE + 1)))
    awarded = list(session.execute(
        select(BadgeCredential.user_id, Achievement)
        .join(Achievement, Achievement.id == BadgeCredential.achievement_id)
        .where(BadgeCredential.revoked_at.is_(None), Achievement.image_sha256.is_not(None))
        .order_by(BadgeCredential.serial.desc()).offset(offset).limit(PER_PAGE + 1)))
    more = len(storefronts) > PER_PAGE or len(awarded) > PER_PAGE
    return render_template(
        "gallery.html", storefronts=storefronts[:PER_PAGE], awarded=awarded[:PER_PAGE], page=page,
        previous=url_for("pages.gallery", page=page - 1) if page > 1 else None,
        next=url_for("pages.gallery", page=page + 1) if more else None,
        og={"title": f"Gallery: {current_app.extensions['settings'].badge_issuer_name}",
            "description": "The latest storefronts and badges made by Future x Past.",
            "url": absolute(url_for("pages.gallery", page=page)),
            "image": absolute(url_for("badges.get_baked_badge", user_id=awarded[0][0],
                                      achievement_id=awarded[0][1].id)) if awarded else None,
            "image_alt": f"The {awarded[0][1].name} badge" if awarded else None},
    )
