"""A job's row, the one truth about it: loading and waiting for it, claiming it for a runner, its progress, the
rows it saved, and its end. Everything here is a short transaction of its own.

A runner claims a job with one atomic UPDATE, so one runner at a time runs it; every row a job saves commits
together with a `job_outputs` link whose primary key (job, slot) refuses a second one: however often a job runs,
it saves each storefront or achievement once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from flask import Flask
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from core.provider_types import GeneratedImage
from models import Achievement, Job, JobOutput, Storefront, utcnow

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
FINAL = frozenset({"succeeded", "failed", "canceled"})
POLL_WHEN_DOWN_S = 1.0
MAX_ATTEMPTS = 2  # a job whose runner died is run once more, never a third time


def longest_run_s(settings) -> float:
    """The longest a job can run: the text call, then both image providers, each spending every retry."""
    return 3 * settings.provider_timeout_s * (settings.provider_retries + 1) + 30


def stale_after_s(settings) -> float:
    """JOB_STALE_S, by default twice the longest run: a running job whose heartbeat is older is taken over."""
    return settings.job_stale_s or 2 * longest_run_s(settings)


def heartbeat_s(settings) -> float:
    return max(0.2, min(stale_after_s(settings) / 4, 30.0))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load(app: Flask, job_id: str) -> Job | None:
    with app.extensions["sessionmaker"]() as session:
        return session.get(Job, job_id)


def wait_for(app: Flask, job_id: str, timeout: float) -> Job:
    """The job once it has ended, or as it stands after `timeout` seconds; the row is read again only when the
    notification channel says that the job changed."""
    deadline = time.monotonic() + timeout
    channel = app.extensions["job_channel"]
    with channel.subscribe(job_id) as changes:
        while True:
            job = load(app, job_id)
            remaining = deadline - time.monotonic()
            if job.status in FINAL or remaining <= 0:
                return job
            # While the channel is down (its Redis or PostgreSQL connection lost), read the row once a second.
            changes.wait(remaining if channel.connected.is_set() else min(remaining, POLL_WHEN_DOWN_S))


def claim(app: Flask, job_id: str) -> int | None:
    """Take the job for this runner: a queued one, or a running one whose runner went silent. Returns the attempt."""
    now = utcnow()
    stale_before = now - timedelta(seconds=stale_after_s(app.extensions["settings"]))
    statement = (
        update(Job)
        .where(Job.id == job_id, or_(Job.status == "queued", and_(
            Job.status == "running", Job.heartbeat_at < stale_before, Job.attempts < MAX_ATTEMPTS)))
        .values(status="running", attempts=Job.attempts + 1, worker=worker_name(), heartbeat_at=now,
                started_at=func.coalesce(Job.started_at, now))
        .returning(Job.attempts)
    )
    with app.extensions["sessionmaker"]() as session:
        attempt = session.scalar(statement)
        session.commit()
    if attempt is not None:
        publish(app, job_id)
    return attempt


def finish(app: Flask, job_id: str, attempt: int | None, **values) -> bool:
    """Record the job's end, unless another runner has taken it over since (then its run decides)."""
    condition = [Job.id == job_id, Job.status == "running"]
    if attempt is not None:
        condition.append(Job.attempts == attempt)
    with app.extensions["sessionmaker"]() as session:
        ended = session.execute(update(Job).where(*condition).values(finished_at=utcnow(), **values)).rowcount
        session.commit()
    if ended:
        publish(app, job_id)
    return bool(ended)


def publish(app: Flask, job_id: str) -> None:
    """Tell every process's streams and waiting requests that the job's row changed (after the commit)."""
    app.extensions["job_channel"].publish(job_id)


def abandon(app: Flask, job_id: str, error) -> None:
    """Fail a queued job that could not be sent to its runner (error: an ApiError), forgetting its idempotency key so
    that the client's retry makes a new one; a waiter attached to it gets the same answer."""
    with app.extensions["sessionmaker"]() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(
            status="failed", http_status=error.status, error=error.to_dict(), headers=error.headers or None,
            idempotency_key=None, finished_at=utcnow()))
        session.commit()
    publish(app, job_id)


def purge(app: Flask, finished_before) -> int:
    """Delete the jobs that ended before `finished_before`, with their idempotency keys and output links (the rows
    they saved stay); how many went."""
    with app.extensions["sessionmaker"]() as session:
        old = select(Job.id).where(Job.status.in_(FINAL), Job.finished_at < finished_before)
        session.execute(delete(JobOutput).where(JobOutput.job_id.in_(old)))
        purged = session.execute(delete(Job).where(Job.id.in_(old))).rowcount
        session.commit()
    if purged:
        log.info("purged %d job(s) that ended before %s", purged, finished_before.isoformat())
    return purged


class Progress:
    """A job's progress: the slots (themes) finished, written to its row as each one ends."""

    def __init__(self, app: Flask, job: Job, attempt: int) -> None:
        self.app, self.job_id, self.attempt = app, job.id, attempt
        self.total = job.progress.get("total", 1)
        self.themes: list[str] = []
        self.lock = threading.Lock()

    def start(self, total: int, done: list[str]) -> None:
        self.total, self.themes = total, list(done)
        self.write()

    def advance(self, slot: str) -> None:
        with self.lock:
            self.themes.append(slot)
            self.write()
        publish(self.app, self.job_id)

    def write(self) -> None:
        progress = {"done": len(self.themes), "total": self.total, "themes": list(self.themes)}
        with self.app.extensions["sessionmaker"]() as session:
            session.execute(update(Job).where(Job.id == self.job_id, Job.attempts == self.attempt)
                            .values(progress=progress))
            session.commit()


def saved_outputs(app: Flask, job_id: str) -> dict[str, JobOutput]:
    """What earlier runs of this job saved, by slot."""
    with app.extensions["sessionmaker"]() as session:
        return {output.slot: output for output in session.scalars(select(JobOutput).where(JobOutput.job_id == job_id))}


def save_once(app: Flask, job_id: str, slot: str, row: Storefront | Achievement, image: GeneratedImage) -> None:
    """Save the row, its PNG and its job link together; when another run of the job saved this slot first,
    save nothing and leave no file behind (ImageStore.saving removes it)."""
    with app.extensions["sessionmaker"]() as session:
        try:
            with app.extensions["image_store"].saving(session) as put:
                for name, value in put(image.png, (image.width, image.height), image.sha256).columns().items():
                    setattr(row, name, value)
                session.add(row)
                session.flush()
                link = {"storefront_id": row.id} if isinstance(row, Storefront) else {"achievement_id": row.id}
                session.add(JobOutput(job_id=job_id, slot=slot, **link))
        except IntegrityError:
            log.warning("job %s: %s was already saved by another run; this one is dropped", job_id, slot)
