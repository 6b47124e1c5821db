"""The Celery app of the service (Flask's "Background Tasks with Celery" pattern): its one task carries a job id and
runs the job inside the Flask app's context. Workers start from `worker.py`."""

from __future__ import annotations

import logging

from flask import Flask

from core.errors import first_line
from jobs.running import TASK_NAME, execute
from jobs.state import longest_run_s, stale_after_s

log = logging.getLogger(__name__)


BROKER_CONNECT_S = 2

# Above any pool's concurrency (the README's command runs 100 greenlets).
BROKER_MAX_CONNECTIONS = 1000


def celery_init_app(app: Flask):
    """The Celery app of this service (Flask's "Background Tasks with Celery" pattern): its task carries a job id
    and runs inside the Flask app's context."""
    from celery import Celery, Task

    settings = app.extensions["settings"]

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    longest = longest_run_s(settings)
    celery.conf.update(
        broker_url=settings.celery_broker_url,
        broker_connection_retry_on_startup=True,
        # A request that sends a job answers within 5 s when the broker is down: two tries of 2 s each at most.
        broker_connection_timeout=BROKER_CONNECT_S,
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5},
        task_default_queue=settings.celery_queue,
        task_ignore_result=True,  # the job row holds the result
        task_acks_late=True,  # a message is done when its job is, so a killed worker's job is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # long tasks: a worker takes only what it runs
        task_soft_time_limit=longest,
        task_time_limit=longest + 30,
        # Redis delivers an unacknowledged message again after this long: after a job may have gone stale.
        broker_transport_options={"visibility_timeout": int(stale_after_s(settings)) + 1,
                                  "socket_connect_timeout": BROKER_CONNECT_S,
                                  # Redis: a gevent pool of 100 acknowledges on up to 100 connections at once; the
                                  # transport's default of 10 failed acks with "Too many connections".
                                  "max_connections": BROKER_MAX_CONNECTIONS},
        worker_hijack_root_logger=False,
    )

    @celery.task(name=TASK_NAME)
    def run_job(job_id: str) -> str | None:
        return execute(app, job_id)

    app.extensions["celery"] = celery
    return celery


def broker_status(celery) -> str:
    """'ok' when the broker takes a connection, else 'unreachable' (for /healthz and the start-up checks)."""
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_CONNECT_S)
    except Exception as error:
        log.warning("health check: broker unreachable (%s)", first_line(error))
        return "unreachable"
    return "ok"
