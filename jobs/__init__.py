"""Generation as durable jobs: each call of a generating route is a row in `jobs` that outlives the request.

- `asking`: what the request asks for (`Prefer`, `Idempotency-Key`) and the answer it gets;
- `state`: the job's row: claim, progress, the rows it saved, its end;
- `kinds`: what each kind of job makes;
- `running`: where jobs run (a pool in this process, or Celery), the heartbeat and the sweeper;
- `celery_app`: the Celery app (workers start from `worker.py`: `celery -A worker worker`);
- `notify`: the notification channel that carries each job's changes to the streams and waiting requests of every
  process (PostgreSQL LISTEN/NOTIFY, Redis pub/sub, or in-process);
- `routes`: `/jobs/{id}`, its cancellation, the list, and the event stream.

The job row is the truth: a queue (the pool's or the broker's) only carries a job's id. A job whose heartbeat
stops (its process died) is claimed again, once, after JOB_STALE_S. Each service process runs a sweeper thread
(from its first request, or as a gunicorn worker boots; `app.config["JOB_SWEEPER"]`, read when the app is made,
turns it on or off, and it is off by default under TESTING).
"""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import func, select

from core import observability
from jobs.celery_app import celery_init_app
from jobs.notify import channel_for
from jobs.routes import bp
from jobs.running import Runner
from models import Job

# The loggers of provider calls: their lines get the job id (JobIdFilter).
PROVIDER_LOGGERS = ("providers", "core.http_client", "clipdrop_gen", "stability_gen", "achievement_gen",
                    "local_image_gen", "local_achievement_gen")


class JobIdFilter(logging.Filter):
    """Append the job id of the current call context to a provider call's log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = observability.current_call().job_id
        if job_id and not getattr(record, "job_id", None):
            record.job_id = job_id
            record.msg = f"{record.msg} job_id={job_id}"
        return True



def init_app(app: Flask) -> None:
    """Give the app its job runner (and Celery app), the job metrics and the `/jobs` routes."""
    metrics = app.extensions["metrics"]
    prom = metrics.prom
    jobs_total = prom.Counter("jobs", "Jobs ended, by kind and status.", ["kind", "status"], registry=metrics.registry)
    job_seconds = prom.Histogram("job_duration_seconds", "Time a job ran, by kind.", ["kind"],
                                 buckets=observability.PROVIDER_BUCKETS, registry=metrics.registry)
    waiting = prom.Gauge("jobs_waiting", "Jobs queued and not yet running (counted when metrics are read).",
                         multiprocess_mode="mostrecent", registry=metrics.registry)

    def count_job(kind: str, status: str, seconds: float | None) -> None:
        jobs_total.labels(kind, status).inc()
        if seconds is not None:
            job_seconds.labels(kind).observe(seconds)

    for name in PROVIDER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, JobIdFilter) for existing in logger.filters):
            logger.addFilter(JobIdFilter())
    def count_waiting() -> None:  # read at each scrape, from the database every process shares
        with app.extensions["sessionmaker"]() as session:
            waiting.set(session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")))

    metrics.count_job = count_job
    metrics.refreshers.append(count_waiting)
    metrics.event_streams = prom.Gauge("event_streams_open", "Job event streams open now.",
                                       multiprocess_mode="livesum", registry=metrics.registry)
    metrics.waiting_for_job = prom.Gauge("requests_waiting_for_job",
                                         "Requests open now that wait for their job to end (no Prefer, or wait=N).",
                                         multiprocess_mode="livesum", registry=metrics.registry)
    app.extensions["job_channel"] = channel_for(app.extensions["settings"], app.extensions["engine"])
    if app.extensions["settings"].celery_broker_url:
        celery_init_app(app)
    runner = app.extensions["jobs"] = Runner(app)
    app.register_blueprint(bp)
    # On the first request of each process (a gunicorn worker starts its own as it boots); tests start none.
    if app.config.get("JOB_SWEEPER", not app.testing):
        app.before_request(runner.start_sweeper)
