"""The Celery app of the service (Flask's "Background Tasks with Celery" pattern): its one task carries a job id and
runs the job inside the Flask app's context. Workers start from `worker.py`."""

from __future__ import annotations

from flask import Flask

from jobs.running import QUEUE, TASK_NAME, execute
from jobs.state import longest_run_s, stale_after_s


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
        task_default_queue=QUEUE,
        task_ignore_result=True,  # the job row holds the result
        task_acks_late=True,  # a message is done when its job is, so a killed worker's job is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # long tasks: a worker takes only what it runs
        task_soft_time_limit=longest,
        task_time_limit=longest + 30,
        # Redis delivers an unacknowledged message again after this long: after a job may have gone stale.
        broker_transport_options={"visibility_timeout": int(stale_after_s(settings)) + 1},
        worker_hijack_root_logger=False,
    )

    @celery.task(name=TASK_NAME)
    def run_job(job_id: str) -> str | None:
        return execute(app, job_id)

    app.extensions["celery"] = celery
    return celery
