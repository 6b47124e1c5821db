"""Serving the app: `python main.py` runs gunicorn with gunicorn.conf.py (or, with FLASK_DEBUG=1, Werkzeug's
development server and its reloader), and the one line that says at start-up what the service runs on."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from flask import Flask
from flask.helpers import get_debug_flag
from sqlalchemy import make_url

from core.settings import Settings, read_env_file
from providers import Generator

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
GUNICORN_CONF = REPO / "gunicorn.conf.py"
APP = "main:create_app()"


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


def serve(factory: Callable[[], Flask]) -> None:
    """Serve the app: the production server, or with FLASK_DEBUG=1 Werkzeug's development server on `factory`."""
    read_env_file()
    if not get_debug_flag():
        exec_gunicorn()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # chatty; core/schema.py says when it upgrades
    app = factory()
    app_settings = app.extensions["settings"]
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":  # the reloader's child serves; its parent only watches files
        log.info(startup_line(app_settings, f"http://{app_settings.host}:{app_settings.port}"))
    app.run(host=app_settings.host, port=app_settings.port, debug=True, use_reloader=True)


def exec_gunicorn() -> None:
    """Become the README's production command, `gunicorn -c gunicorn.conf.py 'main:create_app()'`, in this process:
    gevent must patch the standard library before the app is imported, which this process has done already."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), APP])
