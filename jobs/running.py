"""Where jobs run: a bounded pool in this process, or Celery workers when a broker is set; running one job to its
end with a heartbeat; and the sweeper that runs again the jobs whose runner died."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from flask import Flask
from sqlalchemy import and_, or_, select, update

from core import observability
from core.errors import ApiError, Unavailable, first_line, unavailable
from jobs.kinds import KINDS
from jobs.state import MAX_ATTEMPTS, Progress, claim, finish, heartbeat_s, load, purge, stale_after_s
from models import Job, utcnow

log = logging.getLogger(__name__)

TASK_NAME = "jobs.run_job"


def execute(app: Flask, job_id: str) -> str | None:
    """Claim the job and run it to its end; None when it is not this runner's to run (taken, ended, canceled)."""
    attempt = claim(app, job_id)
    if attempt is None:
        log.info("job %s: not claimed (running elsewhere, ended or canceled)", job_id)
        return None
    job = load(app, job_id)
    stop = threading.Event()
    threading.Thread(target=keep_alive, args=(app, job_id, attempt, stop), daemon=True,
                     name=f"job-heartbeat-{job_id[:8]}").start()
    token = observability.call_context.set(observability.CallContext(job.route, job.request_id, job_id))
    started = time.perf_counter()
    log.info("job %s (%s) started, attempt %d", job_id, job.kind, attempt)
    forget = {}
    try:
        status, http_status, error, headers = "succeeded", 200, None, {}
        result = KINDS[job.kind](app, job, Progress(app, job, attempt))
    except Exception as failure:
        down = unavailable(failure)
        if down is not None:  # a dependency down: its 503, as a request would answer
            log.warning("job %s failed: %s (%s)", job_id, down.code, first_line(failure))
            failure = down
            forget = {"idempotency_key": None}  # a passing fault: the client's retry with its key makes a new job
        if isinstance(failure, ApiError):
            status, http_status, result, error = "failed", failure.status, None, failure.to_dict()
            headers = failure.headers
        else:
            log.exception("job %s failed unexpectedly", job_id)
            status, http_status, result, headers = "failed", 500, None, {}
            error = {"error": "The server hit an unexpected error.", "code": "internal_error"}
    finally:
        stop.set()
        observability.call_context.reset(token)
    ended = finish(app, job_id, attempt, status=status, http_status=http_status, result=result, error=error,
                   headers=headers or None, **forget)
    if ended:
        app.extensions["metrics"].count_job(job.kind, status, time.perf_counter() - started)
        log.info("job %s %s (%d) in %.1f s", job_id, status, http_status, time.perf_counter() - started)
    return status if ended else None


def warn(message: str, *args: object, error: Exception) -> None:
    """Log a background failure: in one line when a dependency is down (it recurs every round while that lasts),
    with its traceback otherwise."""
    if (down := unavailable(error)) is not None:
        log.warning(f"{message}: %s (%s)", *args, down.code, first_line(error))
    else:
        log.warning(message, *args, exc_info=error)


def keep_alive(app: Flask, job_id: str, attempt: int, stop: threading.Event) -> None:
    """Beat the job's heartbeat until it ends, so no other runner takes it over while this one lives."""
    interval = heartbeat_s(app.extensions["settings"])
    while not stop.wait(interval):
        try:
            with app.extensions["sessionmaker"]() as session:
                session.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
                                .values(heartbeat_at=utcnow()))
                session.commit()
        except Exception as error:  # a missed beat is not fatal; the next one may succeed
            warn("job %s: heartbeat failed", job_id, error=error)


class Runner:
    """Runs this service's jobs: in a bounded pool of this process, or on Celery workers when a broker is set.

    A sweeper thread re-dispatches jobs whose runner went silent and fails those that went silent twice.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.settings = app.extensions["settings"]
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None
        self.pid = os.getpid()
        self.stopping = threading.Event()
        self.sweeper: threading.Thread | None = None

    def dispatch(self, job_id: str) -> None:
        """Hand the job to a runner; it may already be running elsewhere (the claim decides). A broker that does not
        take the message within a few seconds (see celery_app) is a 503 queue_unavailable."""
        if self.settings.celery_broker_url:
            try:
                self.app.extensions["celery"].send_task(TASK_NAME, args=[job_id], queue=self.settings.celery_queue)
            except Exception as error:
                log.warning("job %s: the broker did not take it (%s)", job_id, first_line(error))
                raise Unavailable("queue_unavailable", "The job queue does not answer; try again shortly.") from error
        else:
            self.local_pool().submit(self.run, job_id)

    def runs_in_request(self, respond_async: bool, wait_s: int | None) -> bool:
        """Whether the request's own thread runs its job: with no broker, a request that waits for its job without a
        `Prefer` would only sit idle while a pool thread worked, and would queue behind its slots; the pool is kept
        for the jobs that nobody waits on. The job is claimed, beats and is swept like any other."""
        return not self.settings.celery_broker_url and not respond_async and wait_s is None

    def run_here(self, job_id: str) -> None:
        """Run the job on the calling thread (a request that waits for it)."""
        execute(self.app, job_id)

    def local_pool(self) -> ThreadPoolExecutor:
        with self.lock:
            if self.pool is None or self.pid != os.getpid():  # a forked process has none of its parent's threads
                self.pool, self.pid = ThreadPoolExecutor(self.settings.job_workers, thread_name_prefix="job"), \
                    os.getpid()
            return self.pool

    def run(self, job_id: str) -> None:
        try:
            with self.app.app_context():
                execute(self.app, job_id)
        except Exception:  # a pool thread has nobody to raise to
            log.exception("job %s: the runner failed", job_id)

    def start_sweeper(self) -> None:
        """Start this process's sweeper, once."""
        if self.sweeper is not None and self.sweeper.is_alive():  # every request asks: answer without the lock
            return
        with self.lock:
            if self.sweeper is not None and self.sweeper.is_alive():
                return
            self.sweeper = threading.Thread(target=self.sweep_forever, daemon=True, name="job-sweeper")
            self.sweeper.start()
        log.info("job sweeper started: jobs silent for %.0f s are run again", stale_after_s(self.settings))

    def sweep_forever(self) -> None:
        interval = max(0.2, min(stale_after_s(self.settings) / 4, 30.0))
        while not self.stopping.wait(interval):
            try:
                self.sweep()
            except Exception as error:
                warn("job sweeper: this round failed", error=error)

    def sweep(self) -> None:
        """Fail the jobs that went silent twice, re-dispatch the others that went silent or were never run, and
        purge the image cache's old entries."""
        stale_before = utcnow() - timedelta(seconds=stale_after_s(self.settings))
        silent = and_(Job.status == "running", Job.heartbeat_at < stale_before)
        with self.app.extensions["sessionmaker"]() as session:
            lost = list(session.scalars(select(Job.id).where(silent, Job.attempts >= MAX_ATTEMPTS)))
            again = list(session.scalars(select(Job.id).where(or_(
                and_(silent, Job.attempts < MAX_ATTEMPTS),
                # queued long ago: its process died before running it (in-process), or its message was lost
                and_(Job.status == "queued", Job.created_at < stale_before)))))
        for job_id in lost:
            error = {"error": "The job's runner stopped twice before finishing it.", "code": "internal_error"}
            if finish(self.app, job_id, None, status="failed", http_status=500, error=error):
                log.warning("job %s failed: its runner went silent twice", job_id)
                job = load(self.app, job_id)
                self.app.extensions["metrics"].count_job(job.kind, "failed", None)
        for job_id in again:
            log.warning("job %s: its runner went silent; running it again", job_id)
            try:
                self.dispatch(job_id)
            except Unavailable:  # still queued or stale: the next round sends it again
                pass
        purge(self.app, utcnow() - timedelta(days=self.settings.job_retention_days))
        purged = self.app.extensions["image_cache"].purge()  # entries too old to reuse, and their unused files
        if purged:
            log.info("image cache: %d entries too old to reuse purged", purged)

    def shutdown(self) -> None:
        """Stop the sweeper, wait for this process's running jobs, and stop listening for job changes."""
        self.stopping.set()
        sweeper = self.sweeper
        if sweeper is not None and sweeper is not threading.current_thread():
            # A round under way ends first: its connection, checked out while the engine is disposed, would never
            # be closed.
            sweeper.join(timeout=30)
        if self.pool is not None and self.pid == os.getpid():
            self.pool.shutdown(wait=True)
        self.app.extensions["job_channel"].close()
        if "celery" in self.app.extensions:  # its broker connections, those lent out included
            self.app.extensions["celery"].pool.force_close_all()
            self.app.extensions["celery"].close()
