"""`/healthz`, for load balancers: whether each configured dependency answers, by name; the same checks at start-up
(production refuses to start when one fails); `/metrics`, for Prometheus."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Flask, current_app, jsonify

from core import db
from core.shared_counters import store_status
from jobs.celery_app import broker_status

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)

# What each check is about, for the start-up message: what it is, and the setting that points at it.
ABOUT = {"database": ("the database", "DATABASE_URL"),
         "image_dir": ("the image store", "IMAGE_DIR or IMAGE_STORE_URL"),
         "broker": ("the Celery broker", "CELERY_BROKER_URL"),
         "limit_store": ("the limit store", "RATELIMIT_STORAGE_URI"),
         "notification_channel": ("the jobs' notification channel", "DATABASE_URL or RATELIMIT_STORAGE_URI")}


def add_check(app: Flask, name: str, check: Callable[[], str]) -> None:
    """Have /healthz and the start-up checks ask `check()` too ('ok', or a snake_case reason): the hook of any
    dependency a package adds."""
    app.extensions.setdefault("health_checks", {})[name] = check


def run_checks(app: Flask, *, at_startup: bool = False) -> dict[str, str]:
    """Each configured dependency, by name: 'ok', or why not; asked all at once, so that the answer takes as long as
    the slowest one (each is bounded: 2 s for Redis and the broker, 5 s for PostgreSQL), not their sum. The jobs'
    notification channel is asked too, where it listens on a connection of its own, but not at start-up: it rides on
    the database or the limit store, checked already, and asking would start its listener in gunicorn's master."""
    settings = app.extensions["settings"]
    checks: dict[str, Callable[[], str]] = {"database": lambda: db.status(app.extensions["engine"]),
                                            "image_dir": app.extensions["image_store"].status}
    if "celery" in app.extensions:
        checks["broker"] = lambda: broker_status(app.extensions["celery"])
    if settings.ratelimit_storage_uri:
        checks["limit_store"] = lambda: store_status(settings.ratelimit_storage_uri)
    channel = app.extensions.get("job_channel")
    if channel is not None and channel.listens() and not at_startup:
        checks["notification_channel"] = channel.status
    checks.update(app.extensions.get("health_checks", {}))
    def ask(check: Callable[[], str]) -> str:
        with app.app_context():
            return check()

    with ThreadPoolExecutor(len(checks), thread_name_prefix="healthz") as pool:
        asked = {name: pool.submit(ask, check) for name, check in checks.items()}
        return {name: answer.result() for name, answer in asked.items()}


def failures(app: Flask, checks: dict[str, str]) -> dict[str, str]:
    """The checks that make the service unavailable: every one but 'ok', except the limit store under
    RATELIMIT_FAIL_OPEN=1, with the notification channel when it rides on that store (the service then serves
    without limits, and waiters read their jobs once a second: a load balancer must keep it)."""
    optional = {"limit_store", "notification_channel"} if app.extensions["settings"].ratelimit_fail_open else set()
    return {name: status for name, status in checks.items() if status != "ok" and name not in optional}


def check_at_startup(app: Flask) -> None:
    """Production refuses to start, with one line naming it, when a dependency does not answer; development says so
    in the log and starts."""
    failed = failures(app, run_checks(app, at_startup=True))
    if not failed:
        return
    line = "; ".join(describe(name, status) for name, status in failed.items())
    if app.extensions["settings"].is_production:
        raise SystemExit(f"APP_ENV=production does not start: {line}")
    log.warning("starting all the same (development): %s", line)


def describe(name: str, status: str) -> str:
    """'the Celery broker is unreachable (check CELERY_BROKER_URL)'."""
    what, setting = ABOUT.get(name, (f"the {name.replace('_', ' ')}", None))
    return f"{what} is {status.replace('_', ' ')}" + (f" (check {setting})" if setting else "")


@bp.get("/healthz")
def check_health():
    """Whether each configured dependency answers (by name), and which providers serve."""
    generator = current_app.extensions["generator"]
    checks = run_checks(current_app._get_current_object())  # the app itself: its checks run on threads
    providers = {"image": [provider.NAME for provider in generator.image_chain],
                 "text": generator.text_provider.NAME}
    failed = list(failures(current_app, checks))
    if failed:
        return jsonify({"error": f"Not ready: {', '.join(failed)}.", "code": "unhealthy", "status": "unavailable",
                        "failed": failed, "checks": checks, "providers": providers}), 503
    return jsonify({"status": "ok", "checks": checks, "providers": providers})


@bp.get("/metrics")
def export_metrics():
    """Prometheus metrics: requests, latencies, generations, Clipdrop credits."""
    return current_app.extensions["metrics"].exposition()
