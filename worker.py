"""The Celery workers' entry: `celery -A worker worker --loglevel INFO` builds the service's app from the settings
(environment and `.env`, as `python main.py` does) and serves its job task (see the README, Celery workers)."""

from __future__ import annotations

import logging

from celery import Celery

from main import create_app


def celery_app() -> Celery:
    """The Celery app of a service built from the settings; it needs CELERY_BROKER_URL."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = create_app()
    if "celery" not in service.extensions:
        raise SystemExit("CELERY_BROKER_URL is not set: there is no broker for a worker to read jobs from")
    return service.extensions["celery"]


celery = celery_app()
