"""The Future x Past backend: the Flask app factory and every route of the HTTP contract."""

from __future__ import annotations

import base64
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, Flask, current_app, g, jsonify, request
from flask.helpers import get_debug_flag
from flask_cors import CORS
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from gunicorn.app.base import Application
from sqlalchemy import bindparam, delete, make_url, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

import badges
import counters
import images
import jobs
import migrate
import observability
import seed
import spend
from api_docs import docs, load_openapi
from config import Settings, read_env_file
from errors import ApiError, NotFound
from image_store import ImageStore
from models import Achievement, Storefront, User, UserAchievement, make_engine
from params import (
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
from providers import Generator

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)

# The PNG routes' lookups, built once: on that hot path, building a statement and an ORM session per request
# cost more than the query itself (see README, Benchmarks).
STOREFRONT_IMAGE = select(Storefront.user_id, Storefront.image_sha256).where(Storefront.id == bindparam("id"))
ACHIEVEMENT_IMAGE = select(Achievement.image_sha256).where(Achievement.id == bindparam("id"))
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    416: "range_not_satisfiable",
    429: "rate_limited",
}


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
    if settings.trusted_proxies:  # the client address (rate limits) is what the proxies in front say it is
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)
    app.json.sort_keys = False
    engine = make_engine(settings.database_url)
    try:  # development upgrades the schema itself; production expects `alembic upgrade head` as a deploy step
        migrate.prepare(engine, upgrade_allowed=not settings.is_production)
    except BaseException:
        engine.dispose()
        raise
    metrics = observability.init_app(app)
    app.extensions["settings"] = settings
    app.extensions["engine"] = engine
    app.extensions["sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
    app.extensions["image_store"] = images.store_for(settings)
    state = counters.shared_state(engine, settings.ratelimit_storage_uri)
    ledger = spend.init_app(app, engine, settings, state, metrics)
    app.extensions["generator"] = Generator(settings, watch=metrics.watch_provider, state=state, ledger=ledger)
    app.extensions["openapi"] = load_openapi()

    CORS(app, origins=list(settings.cors_origins), expose_headers=[
        "ETag", "Retry-After", "X-Request-ID", "Location", "Preference-Applied", "Idempotent-Replayed"])
    app.register_blueprint(bp)
    app.register_blueprint(docs)
    badges.init_app(app, settings)
    app.register_blueprint(images.bp)
    jobs.init_app(app)
    limit_generation(app, settings)
    app.teardown_appcontext(close_session)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(Exception, handle_unexpected_error)
    seed.register_commands(app)
    images.register_commands(app)
    return app


def limit_generation(app: Flask, settings: Settings) -> None:
    """Apply GENERATION_RATE_LIMIT per client address to each generating route, counted separately."""
    if not settings.generation_rate_limit:
        return
    # One count for every worker and machine: in the database, or where RATELIMIT_STORAGE_URI says.
    storage_uri, storage_options = counters.limiter_storage(app.extensions["engine"], settings.ratelimit_storage_uri)
    limiter = Limiter(
        get_remote_address, app=app, storage_uri=storage_uri, storage_options=storage_options,
        headers_enabled=True, default_limits=[],
    )
    for endpoint in ("api.generate_storefronts", "api.generate_achievement"):
        app.view_functions[endpoint] = limiter.limit(settings.generation_rate_limit)(app.view_functions[endpoint])


# --- per-request plumbing -------------------------------------------------------------------------


def get_session() -> Session:
    """The database session of this request, opened on first use."""
    if "db" not in g:
        g.db = current_app.extensions["sessionmaker"]()
    return g.db


def close_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def settings() -> Settings:
    return current_app.extensions["settings"]


def image_store() -> ImageStore:
    return current_app.extensions["image_store"]


def generator() -> Generator:
    return current_app.extensions["generator"]


@bp.before_app_request
def refuse_large_bodies() -> None:
    # Werkzeug only enforces the limit when the body is read; refuse early so every route answers alike.
    if request.content_length is not None and request.content_length > settings().max_request_bytes:
        raise RequestEntityTooLarge()


@bp.before_app_request
def ignore_unusable_range() -> None:
    # RFC 9110: a Range in a unit we do not serve must be ignored, and a malformed one may be; Werkzeug would
    # answer both with 416, which is meant for a range past the end of the file.
    if "HTTP_RANGE" in request.environ and (request.range is None or request.range.units != "bytes"):
        del request.environ["HTTP_RANGE"]


@bp.after_app_request
def add_security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def find_user(user_id: int, *, lock: bool = False) -> User:
    """The user, or 404; `lock` holds the user's row until commit, so writes about one user take turns."""
    # FOR NO KEY UPDATE (PostgreSQL; SQLite locks on write anyway): it still lets other requests insert rows
    # that merely reference this user, such as an award.
    user = get_session().get(User, user_id, with_for_update={"key_share": True} if lock else None)
    if user is None:
        raise NotFound(f"No user has id {user_id}.", code="user_not_found")
    return user


def look_up(statement, **params):
    """The first row of a read-only statement, on a pooled connection without an ORM session."""
    with current_app.extensions["engine"].connect() as connection:
        return connection.execute(statement, params).first()


def find_achievement(achievement_id: int) -> Achievement:
    achievement = get_session().get(Achievement, achievement_id)
    if achievement is None:
        raise NotFound(f"No achievement has id {achievement_id}.", code="achievement_not_found")
    return achievement


# --- error handlers -------------------------------------------------------------------------------


def handle_api_error(error: ApiError):
    return jsonify(error.to_dict()), error.status, error.headers


def handle_http_error(error: HTTPException):
    response = error.get_response()
    code = HTTP_CODES.get(error.code or 500, "internal_error" if (error.code or 500) >= 500 else "bad_request")
    message = error.description
    if isinstance(error, RateLimitExceeded):  # its description is the bare limit, e.g. "30 per 1 minute"
        message = f"Too many generation requests from this address (limit: {error.description}); try again later."
    response.set_data(current_app.json.dumps({"error": message, "code": code}))
    response.content_type = "application/json"
    return response


def handle_unexpected_error(error: Exception):
    if "db" in g:
        g.db.rollback()
    log.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify({"error": "The server hit an unexpected error.", "code": "internal_error"}), 500


# --- storefronts ----------------------------------------------------------------------------------


@bp.post("/gen-new-storefront-images")
def generate_storefronts():
    """Generate one storefront image per requested theme of the user, concurrently, as a job (see jobs.py)."""
    user_id = parse_id(param("user_id"), "user_id")
    shop_theme = parse_text(param("shop_theme"), "shop_theme")
    preferences = jobs.read_preferences()
    user = find_user(user_id)
    recommendations = user.recommendations or {}
    themes = list(recommendations) if shop_theme == "all" else [shop_theme]
    if not themes or any(theme not in recommendations for theme in themes):
        raise NotFound("Mismatch of Themes", code="theme_not_found", field="shop_theme")

    spend.check_budget()
    return jobs.submit("storefronts", {"user_id": user_id, "shop_theme": shop_theme}, preferences,
                       total=len(themes))


@bp.get("/get-user-storefront-images")
def list_storefront_images():
    """The user's storefronts with their PNGs inline, base64-encoded."""
    user = find_user(parse_id(param("user_id"), "user_id"))
    store = image_store()
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

    found = look_up(STOREFRONT_IMAGE, id=storefront_id)
    if found is None or found.user_id != user_id:
        find_user(user_id)  # only to tell which 404 it is
        raise not_found()
    return images.send_png(found.image_sha256, not_found)


@bp.get("/get-all-user-storefront-image")
def list_storefronts():
    """The user's storefronts, without image bytes."""
    user = find_user(parse_id(param("user_id"), "user_id"))
    return jsonify({"storefronts": [storefront.to_dict() for storefront in user.storefronts]})


@bp.delete("/delete-all-storefronts")
def delete_all_storefronts():
    """Delete every storefront, and the PNG files no remaining row uses."""
    require_admin()
    session = get_session()
    hashes = set(session.scalars(select(Storefront.image_sha256).distinct()))
    deleted = session.execute(delete(Storefront)).rowcount
    session.commit()
    image_store().remove_unused(session, hashes)
    return jsonify({"message": "All storefront entries deleted successfully", "deleted": deleted})


# --- achievements ---------------------------------------------------------------------------------


@bp.post("/gen-achievement-image")
def generate_achievement():
    """Write an achievement for the celebration nearest a date and a product, with its badge image, as a job."""
    day = parse_day(param("date"), "date", today=datetime.now(UTC).date())
    product = parse_text(param("product"), "product")
    preferences = jobs.read_preferences()
    spend.check_budget()
    return jobs.submit("achievement", {"date": day.isoformat(), "product": product}, preferences)


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
            badges.issue(session, user_id, [achievement_id])
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


def no_image(achievement_id: int) -> NotFound:
    return NotFound(f"Achievement {achievement_id} has no image.", code="achievement_not_found")


@bp.get("/view-achievement-image")
def view_achievement_image():
    """The achievement's PNG, base64-encoded in JSON, beside its fields (the first front end's popup reads them)."""
    achievement = find_achievement(parse_id(param("achievement_id"), "achievement_id"))
    if not achievement.image_sha256:
        raise no_image(achievement.id)
    try:
        png = image_store().read(achievement.image_sha256)
    except FileNotFoundError:
        raise no_image(achievement.id) from None
    return jsonify({"achievements": base64.b64encode(png).decode("ascii"), **achievement.to_dict()})


@bp.get("/get-achievement-image")
def get_achievement_image():
    """The achievement's PNG."""
    achievement_id = parse_id(param("achievement_id"), "achievement_id")
    found = look_up(ACHIEVEMENT_IMAGE, id=achievement_id)
    if found is None:
        find_achievement(achievement_id)  # raises achievement_not_found
    return images.send_png(found.image_sha256 if found else None, lambda: no_image(achievement_id))


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
    badges.sync(session, user_id, ids)  # revokes the credentials of removed achievements, issues the added ones
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
    seed.seed_random(get_session(), image_store(), **counts)
    return jsonify({"message": "Database seeded with fake data", **counts}), 201


# --- operations -----------------------------------------------------------------------------------


@bp.get("/healthz")
def check_health():
    """Whether the database answers and the image folder takes files, and which providers serve."""
    checks = {"database": database_status(), "image_dir": image_store().status()}
    providers = {"image": [provider.NAME for provider in generator().image_chain],
                 "text": generator().text_provider.NAME}
    failed = [name for name, status in checks.items() if status != "ok"]
    if failed:
        return jsonify({"error": f"Not ready: {', '.join(failed)}.", "code": "unhealthy", "status": "unavailable",
                        "checks": checks, "providers": providers}), 503
    return jsonify({"status": "ok", "checks": checks, "providers": providers})


def database_status() -> str:
    try:
        with current_app.extensions["engine"].connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        log.warning("health check: database unreachable (%s)", type(error).__name__)
        return "unreachable"
    return "ok"


@bp.get("/metrics")
def export_metrics():
    """Prometheus metrics: requests, latencies, generations, Clipdrop credits."""
    return current_app.extensions["metrics"].exposition()


# --- serving --------------------------------------------------------------------------------------

GUNICORN_CONF = Path(__file__).resolve().with_name("gunicorn.conf.py")


class GunicornServer(Application):
    """The app under gunicorn with gunicorn.conf.py, configured in code: it never reads the command line."""

    def load_config(self) -> None:
        self.load_config_from_file(str(GUNICORN_CONF))

    def load(self) -> Flask:
        return create_app()


def startup_line(settings: Settings, base_url: str) -> str:
    """What a newcomer needs at start-up: where to go, and what the service runs on (never a secret)."""
    chosen = Generator(settings)
    images = settings.image_store_url or f"folder {settings.image_dir.resolve()}"
    if settings.image_store_url and settings.s3_endpoint_url:
        images += f" at {make_url_safe(settings.s3_endpoint_url)}"
    jobs_runner = (f"on Celery workers via {make_url_safe(settings.celery_broker_url)}" if settings.celery_broker_url
                   else f"in process ({settings.job_workers} per worker)")
    return (f"Serving on {base_url} (API docs: {base_url}/docs); "
            f"database {make_url(settings.database_url).render_as_string(hide_password=True)}; images in {images}; "
            f"image providers {', '.join(provider.NAME for provider in chosen.image_chain)}; "
            f"text provider {chosen.text_provider.NAME}; jobs {jobs_runner}")


def make_url_safe(url: str) -> str:
    """`url` without the password it may carry."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                     + (f":{parts.port}" if parts.port else "")))


def serve() -> None:
    """`python main.py`: gunicorn, or with FLASK_DEBUG=1 Werkzeug's development server and its reloader."""
    read_env_file()
    if not get_debug_flag():
        GunicornServer().run()
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # chatty at every start; migrate.py says when it upgrades
    app = create_app()
    app_settings = app.extensions["settings"]
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":  # the reloader's child serves; its parent only watches files
        log.info(startup_line(app_settings, f"http://{app_settings.host}:{app_settings.port}"))
    app.run(host=app_settings.host, port=app_settings.port, debug=True, use_reloader=True)


if __name__ == "__main__":
    serve()
