"""The `/jobs` routes: a job, its cancellation, the latest jobs, and its progress as Server-Sent Events."""

from __future__ import annotations

import json
import re
import time

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select, update

from core.errors import ApiError, NotFound
from core.params import param, parse_int, require_admin
from jobs.state import FINAL, STATUSES, load, publish
from models import Job, utcnow

bp = Blueprint("jobs", __name__)

KEEPALIVE_S = 15
RETRY_MS = 1000  # how long EventSource waits before it reconnects, after SSE_MAX_S or a dropped connection
EVENT_ID = re.compile(rf"(\d{{1,9}}):({'|'.join(STATUSES)})")


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
        publish(current_app._get_current_object(), job.id)
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
    """Server-Sent Events: the job's status now and at each change, each theme as it ends, until it has ended or
    SSE_MAX_S has passed; a client that sends `Last-Event-ID` gets only the events it missed."""
    app = current_app._get_current_object()
    job = find_job(job_id)
    last = parse_event_id(request.headers.get("Last-Event-ID", ""))
    if last is not None and last[1] in FINAL and job.status in FINAL:
        return Response(status=204)  # the client saw the end: 204 tells EventSource to stop reconnecting
    channel, max_s = app.extensions["job_channel"], app.extensions["settings"].sse_max_s
    open_streams = app.extensions["metrics"].event_streams

    def events():
        deadline = time.monotonic() + max_s
        with open_streams.track_inprogress(), channel.subscribe(job_id) as changes:
            yield f"retry: {RETRY_MS}\n\n"
            seen = last or (0, None)
            current = load(app, job_id)  # again, now that a change cannot go unnoticed
            while True:
                chunks, seen = events_since(current, seen)
                yield from chunks
                remaining = deadline - time.monotonic()
                if current.status in FINAL or remaining <= 0:
                    return
                if changes.wait(min(KEEPALIVE_S, remaining)):
                    current = load(app, job_id)
                elif deadline > time.monotonic():
                    yield ": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: pass each event on at once
    return Response(events(), mimetype="text/event-stream", headers=headers)


def events_since(job: Job, seen: tuple[int, str | None]) -> tuple[list[str], tuple[int, str]]:
    """The events of `job` after the one whose id is `seen` (themes done, status; status None: none seen), and the
    new `seen`. An event's id is `<themes done>:<status>`, so it says where a resuming client stands; themes end
    only while a job runs, so a `progress` event's status is `running`."""
    themes = job.progress.get("themes", [])
    done, status = seen
    if status is None:  # a new client: where the job stands now
        return [event("status", job.to_dict(), f"{len(themes)}:{job.status}")], (len(themes), job.status)
    chunks = []
    if job.status != status and job.status not in FINAL:  # it started: say so before the themes it ended
        status = job.status
        chunks.append(event("status", job.to_dict(), f"{done}:{status}"))
    for number, theme in enumerate(themes[done:], start=done + 1):
        status = "running"
        chunks.append(event("progress", {"done": number, "total": job.progress.get("total"),
                                         "theme": theme if job.kind == "storefronts" else None}, f"{number}:running"))
    done = max(done, len(themes))
    if job.status != status:
        chunks.append(event("status", job.to_dict(), f"{done}:{job.status}"))
    return chunks, (done, job.status)


def parse_event_id(value: str) -> tuple[int, str] | None:
    """The (themes done, status) of a `Last-Event-ID`, or None when it is not one of ours (then the stream starts
    afresh)."""
    match = EVENT_ID.fullmatch(value.strip())
    return (int(match[1]), match[2]) if match else None


def event(name: str, data: dict, event_id: str) -> str:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
