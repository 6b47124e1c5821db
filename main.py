"""The Future x Past backend: the app factory, and the routes of the first version (storefronts, achievements,
recommendations and demo data). Every other capability is a package that the factory plugs in with its
`init_app`; `python main.py` serves the app (see `ops/serving.py`)."""

from __future__ import annotations

import base64
import logging
import os
from datetime import UTC, datetime

from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.middleware.proxy_fix import ProxyFix

import api_docs
import badges
import images
import jobs
import ops
import seed
import spend
from badges.credentials import issue, sync
from core import db, errors, http_edge, observability, schema
from core.cpu import take_turn
from core.db import find_achievement, find_themes, find_user, get_session, look_up, no_image
from core.errors import NotFound, first_line
from core.image_cache import ImageCache
from core.image_store import store_for
from core.ledger import Ledger
from core.params import (
    asks_fresh,
    json_body,
    param,
    parse_day,
    parse_id,
    parse_id_list,
    parse_int,
    parse_seed_counts,
    parse_text,
    require_admin,
)
from core.provider_slots import ProviderSlots, caps_of
from core.settings import Settings, read_env_file
from core.shared_counters import shared_state
from images.delivery import send_png
from jobs.asking import read_preferences, submit
from models import Achievement, Storefront, UserAchievement
from ops.health import check_at_startup
from ops.serving import serve
from providers import Generator
from spend.budget import check_budget
from spend.limits import limit_routes

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)

# The PNG routes' lookups, built once: on that hot path, building a statement and an ORM session per request
# cost more than the query itself (see README, Benchmarks).
STOREFRONT_IMAGE = select(Storefront.user_id, Storefront.image_sha256).where(Storefront.id == bindparam("id"))
ACHIEVEMENT_IMAGE = select(Achievement.image_sha256).where(Achievement.id == bindparam("id"))
GENERATING_ROUTES = ("api.generate_storefronts", "api.generate_achievement")


def create_app(config: dict | None = None) -> Flask:
    """Build the app from the environment (and `.env`), then `config`, which always wins."""
    config = dict(config or {})
    if not config.get("TESTING"):
        read_env_file()
    settings = Settings.from_mapping({**os.environ, **config})
    if settings.is_production and not settings.admin_token:
        raise SystemExit("APP_ENV=production needs ADMIN_TOKEN to be set")
    if settings.is_production and "*" in settings.cors_origins:
        log.warning("CORS_ORIGINS is '*' in production: every web origin may call this API")

    # No static folder: the service has no static files, and the docs assets come from their package.
    app = Flask(__name__, static_folder=None)
    app.config.update(config)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    if settings.trusted_hosts:  # any other Host is 400 bad_request (Werkzeug's SecurityError, answered in JSON)
        app.config["TRUSTED_HOSTS"] = list(settings.trusted_hosts)
        app.wsgi_app = http_edge.case_insensitive_host(app.wsgi_app)
    if settings.trusted_proxies:  # the client address (rate limits) is what the proxies in front say it is
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)
    app.json.sort_keys = False
    engine = db.open_engine(settings.database_url)
    try:  # development upgrades the schema itself; production expects `alembic upgrade head` as a deploy step
        schema.prepare(engine, upgrade_allowed=not settings.is_production)
    except SQLAlchemyError as error:  # one line that names it, not a driver's traceback
        engine.dispose()
        raise SystemExit(f"The database does not answer (DATABASE_URL={db.safe_url(engine)}): "
                         f"{first_line(error)}") from None
    except BaseException:
        engine.dispose()
        raise
    metrics = observability.init_app(app)  # first, so that every request is counted and logged
    http_edge.init_app(app)
    app.extensions["settings"] = settings
    db.init_app(app, engine)
    app.extensions["image_store"] = store_for(settings)
    state = shared_state(engine, settings.ratelimit_storage_uri)
    ledger = app.extensions["ledger"] = Ledger(engine, settings, state, metrics.provider_cost)
    cache = app.extensions["image_cache"] = ImageCache(engine, app.extensions["image_store"], settings)
    slots = ProviderSlots(state, caps_of(settings), settings.provider_lease_s, metrics.provider_in_flight,
                          metrics.provider_waiting)
    app.extensions["generator"] = Generator(settings, watch=metrics.watch_provider, state=state, ledger=ledger,
                                            cache=cache, slots=slots)

    http_edge.allow_cross_origin(app, settings.cors_origins, expose_headers=[
        "ETag", "Retry-After", "X-Request-ID", "Location", "Preference-Applied", "Idempotent-Replayed"])
    app.register_blueprint(bp)
    api_docs.init_app(app)
    badges.init_app(app, settings)
    images.init_app(app)
    jobs.init_app(app)
    spend.init_app(app)
    ops.init_app(app)
    generating = frozenset(rule.rule for rule in app.url_map.iter_rules() if rule.endpoint in GENERATING_ROUTES)
    app.wsgi_app = generations_take_turns(app.wsgi_app, generating)
    limit_routes(app, settings, {**dict.fromkeys(GENERATING_ROUTES, settings.generation_rate_limit),
                                 "badges.post_verify": settings.verify_rate_limit})
    errors.init_app(app)
    seed.register_commands(app)
    if not app.testing:
        check_at_startup(app)
    return app


def generations_take_turns(wsgi_app, paths: frozenset[str]):
    """A burst of generations arrives at once: each request starts behind whatever else is ready (core/cpu.py),
    before Flask builds its request and runs its hooks (a burst's first stretch, run for every request at once)."""
    def turn_first(environ, start_response):
        if environ.get("PATH_INFO") in paths:
            take_turn()
        return wsgi_app(environ, start_response)
    return turn_first


# --- storefronts ----------------------------------------------------------------------------------


@bp.post("/gen-new-storefront-images")
def generate_storefronts():
    """Generate one storefront image per requested theme of the user, concurrently, as a job (see the jobs package)."""
    user_id = parse_id(param("user_id"), "user_id")
    shop_theme = parse_text(param("shop_theme"), "shop_theme")
    fresh = asks_fresh()
    preferences = read_preferences()
    themes = find_themes(find_user(user_id).recommendations or {}, shop_theme)

    check_budget()
    params = {"user_id": user_id, "shop_theme": shop_theme, **({"fresh": True} if fresh else {})}
    return submit("storefronts", params, preferences, total=len(themes))


@bp.get("/get-user-storefront-images")
def list_storefront_images():
    """The user's storefronts with their PNGs inline, base64-encoded."""
    user = find_user(parse_id(param("user_id"), "user_id"))
    store = current_app.extensions["image_store"]
    images = []
    for storefront in user.storefronts:
        item = storefront.to_dict()
        item["storefront_image_binary"] = base64.b64encode(store.read(storefront.image_sha256)).decode("ascii")
        images.append(item)
    body = {"user name": user.name, "storefront_images": images}
    if not images:
        body["message"] = "No storefront images found for this user"
    return jsonify(body)


@bp.get("/download-user-storefront-image")
def download_storefront_image():
    """One storefront's PNG."""
    user_id = parse_id(param("user_id"), "user_id")
    storefront_id = parse_id(param("storefront_id"), "storefront_id")

    def not_found() -> NotFound:
        return NotFound(f"User {user_id} has no storefront {storefront_id}.", code="storefront_not_found")

    owner, sha256 = look_up(STOREFRONT_IMAGE, id=storefront_id) or (None, None)
    if owner != user_id:
        find_user(user_id)  # only to tell which 404 it is
        raise not_found()
    return send_png(sha256, not_found)


@bp.get("/get-all-user-storefront-image")
def list_storefronts():
    """The user's storefronts, without image bytes."""
    user = find_user(parse_id(param("user_id"), "user_id"))
    return jsonify({"storefronts": [storefront.to_dict() for storefront in user.storefronts]})


@bp.delete("/delete-all-storefronts")
def delete_all_storefronts():
    """Delete every storefront, and the PNG files no remaining row uses: theirs, and those an earlier removal could
    not delete (a file the store refuses to delete now is left, with its `images` row, for the next one)."""
    require_admin()
    session = get_session()
    store = current_app.extensions["image_store"]
    hashes = set(session.scalars(select(Storefront.image_sha256).distinct())) | set(store.unused(session))
    deleted = session.execute(delete(Storefront)).rowcount
    session.commit()
    removed = store.remove_unused(session, hashes)
    return jsonify({"message": "All storefront entries deleted successfully", "deleted": deleted,
                    "files_removed": removed, "files_left": len(store.unused(session))})


# --- achievements ---------------------------------------------------------------------------------


@bp.post("/gen-achievement-image")
def generate_achievement():
    """Write an achievement for the celebration nearest a date and a product, with its badge image, as a job."""
    day = parse_day(param("date"), "date", today=datetime.now(UTC).date())
    product = parse_text(param("product"), "product")
    fresh = asks_fresh()
    preferences = read_preferences()
    check_budget()
    params = {"date": day.isoformat(), "product": product, **({"fresh": True} if fresh else {})}
    return submit("achievement", params, preferences)


@bp.post("/add-achievement")
def add_achievement():
    """Award an achievement to a user; awarding it again changes nothing."""
    user_id = parse_id(param("user_id"), "user_id")
    achievement_id = parse_id(param("achievement_id"), "achievement_id")
    find_user(user_id, lock=True)  # after a concurrent assign of this user, not inside it
    find_achievement(achievement_id)
    session = get_session()
    if session.get(UserAchievement, (user_id, achievement_id)) is None:
        session.add(UserAchievement(user_id=user_id, achievement_id=achievement_id))
        try:
            issue(session, user_id, [achievement_id])
            session.commit()
            return jsonify({"message": "Successfully attributed user to achievement"}), 201
        except IntegrityError:  # another request awarded it at the same moment
            session.rollback()
    return jsonify({"message": "User already holds this achievement; nothing changed"}), 200


@bp.get("/view-all-achievement")
def list_achievements():
    """Every achievement, by id, optionally paged with `limit` and `offset`."""
    limit = param("limit")
    offset = param("offset")
    # Plain rows, not ORM objects: building 10,000 objects took most of the time (see README, Benchmarks).
    query = select(*Achievement.listed_columns()).order_by(Achievement.id)
    if limit is not None:
        query = query.limit(parse_int(limit, "limit", 1, 1000))
    if offset is not None:
        query = query.offset(parse_int(offset, "offset", 0))
    rows = get_session().execute(query)
    return jsonify({"achievements": [Achievement.as_dict(*row) for row in rows]})


@bp.get("/view-achievement-image")
def view_achievement_image():
    """The achievement's PNG, base64-encoded in JSON, beside its fields (the first front end's popup reads them)."""
    achievement = find_achievement(parse_id(param("achievement_id"), "achievement_id"))
    if not achievement.image_sha256:
        raise no_image(achievement.id)
    try:
        png = current_app.extensions["image_store"].read(achievement.image_sha256)
    except FileNotFoundError:
        raise no_image(achievement.id) from None
    return jsonify({"achievements": base64.b64encode(png).decode("ascii"), **achievement.to_dict()})


@bp.get("/get-achievement-image")
def get_achievement_image():
    """The achievement's PNG."""
    achievement_id = parse_id(param("achievement_id"), "achievement_id")
    (sha256,) = look_up(ACHIEVEMENT_IMAGE, id=achievement_id) or (None,)
    if sha256 is None:
        find_achievement(achievement_id)  # raises achievement_not_found when there is no such row
    return send_png(sha256, lambda: no_image(achievement_id))


@bp.get("/view-all-achievement-user")
def list_user_achievements():
    """The achievements the user holds."""
    user = find_user(parse_id(param("user_id"), "user_id"))
    return jsonify({"achievements": [achievement.to_dict() for achievement in user.achievements]})


@bp.post("/assign-achievements-to-user")
def assign_achievements():
    """Replace the user's set of achievements with the given list."""
    user_id = parse_id(param("user_id"), "user_id")
    raw_list = param("achievement_list")
    ids = parse_id_list(raw_list, "achievement_list", from_query="achievement_list" in request.args)
    find_user(user_id, lock=True)  # concurrent assigns to one user then leave one of their sets, never a mix
    session = get_session()
    known = set(session.scalars(select(Achievement.id).where(Achievement.id.in_(ids)))) if ids else set()
    unknown = sorted(set(ids) - known)
    if unknown:
        raise NotFound(f"Unknown achievement ids: {unknown}.", code="achievement_not_found", unknown_ids=unknown)
    session.execute(delete(UserAchievement).where(UserAchievement.user_id == user_id))
    session.add_all(UserAchievement(user_id=user_id, achievement_id=i) for i in ids)
    sync(session, user_id, ids)  # revokes the credentials of removed achievements, issues the added ones
    session.commit()
    return jsonify({"message": "Achievements assigned to user", "achievement_ids": ids})


# --- recommendations and demo data ----------------------------------------------------------------


@bp.get("/get-recommendations")
def get_recommendations():
    """The user's recommendations: theme to product names."""
    user = find_user(parse_id(param("user_id"), "user_id"))
    return jsonify({"recommendations": user.recommendations})


@bp.post("/seed-specific")
def seed_specific():
    """Add the three demo users with their fixed recommendations."""
    require_admin()
    session = get_session()
    users = seed.seed_specific(session)
    return jsonify({"message": "Database seeded with fake data",
                    "users": [{"id": user.id, "name": user.name} for user in users]}), 201


@bp.post("/seedrandom")
def seed_random():
    """Add random users, achievements and storefronts, counts from the JSON body."""
    require_admin()
    counts = parse_seed_counts(json_body())
    seed.seed_random(get_session(), current_app.extensions["image_store"], **counts)
    return jsonify({"message": "Database seeded with fake data", **counts}), 201


if __name__ == "__main__":
    serve(create_app)
