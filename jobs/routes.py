"""The `/jobs` routes: a job, its cancellation, the latest jobs, and its progress as Server-Sent Events."""

from __future__ import annotations

import json
import time

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import select, update

from core.errors import ApiError, NotFound
from core.params import param, parse_int, require_admin
from jobs.state import FINAL, POLL_FIRST_S, POLL_MAX_S, STATUSES, changed, load, notify
from models import Job, utcnow

bp = Blueprint("jobs", __name__)

KEEPALIVE_S = 15


@bp.before_app_request
def start_sweeper() -> None:
    # On the first request of each process (a gunicorn worker, not the master that forks them): tests start none.
    if current_app.config.get("JOB_SWEEPER", not current_app.testing):
        current_app.extensions["jobs"].start_sweeper()


def find_job(job_id: str) -> Job:
    job = load(current_app._get_current_object(), job_id) if len(job_id) <= 36 else None
    if job is None:
        raise NotFound(f"No job has id {job_id}.", code="job_not_found")
    return job


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    """A job: where it stands, and its answer once it has ended."""
    return jsonify(find_job(job_id).to_dict())


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str):
    """Cancel a queued job: no provider is ever called for it."""
    job = find_job(job_id)
    error = {"error": "The job was canceled before it ran.", "code": "job_canceled"}
    with current_app.extensions["sessionmaker"]() as session:
        canceled = session.execute(update(Job).where(Job.id == job.id, Job.status == "queued").values(
            status="canceled", finished_at=utcnow(), error=error, http_status=409)).rowcount
        session.commit()
    job = find_job(job_id)
    if canceled:
        notify()
        current_app.extensions["metrics"].count_job(job.kind, "canceled", None)
        return jsonify(job.to_dict())
    if job.status == "running":
        raise ApiError("The job is running; only a queued job can be canceled.", status=409, code="job_running")
    raise ApiError(f"The job has already ended ({job.status}).", status=409, code="job_finished")


@bp.get("/jobs")
def list_jobs():
    """The latest jobs, newest first (admin)."""

    require_admin()
    limit = param("limit")
    status = param("status")
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(
        50 if limit is None else parse_int(limit, "limit", 1, 1000))
    if status is not None:
        if status not in STATUSES:
            raise ApiError(f"status must be one of: {', '.join(STATUSES)}.", code="invalid_parameter", field="status")
        query = query.where(Job.status == status)
    with current_app.extensions["sessionmaker"]() as session:
        return jsonify({"jobs": [job.to_dict() for job in session.scalars(query)]})


@bp.get("/jobs/<job_id>/events")
def stream_job_events(job_id: str):
    """Server-Sent Events: the job's status now and at each change, each theme as it ends, until it has ended."""
    job = find_job(job_id)
    app = current_app._get_current_object()

    def events():
        current = job
        yield event("status", current.to_dict())
        seen, status, beat = len(current.progress.get("themes", [])), current.status, time.monotonic()
        delay = POLL_FIRST_S
        while current.status not in FINAL:
            with changed:
                changed.wait(delay)
            delay = min(delay * 1.5, POLL_MAX_S)
            current = load(app, job_id)
            themes = current.progress.get("themes", [])
            for done, theme in enumerate(themes[seen:], start=seen + 1):
                yield event("progress", {"done": done, "total": current.progress.get("total"),
                                         "theme": theme if current.kind == "storefronts" else None})
                beat, delay = time.monotonic(), POLL_FIRST_S
            seen = max(seen, len(themes))
            if current.status != status:
                status = current.status
                yield event("status", current.to_dict())
                beat, delay = time.monotonic(), POLL_FIRST_S
            elif time.monotonic() - beat >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                beat = time.monotonic()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: pass each event on at once
    return Response(events(), mimetype="text/event-stream", headers=headers)


def event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"
