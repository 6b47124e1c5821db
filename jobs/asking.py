"""Asking for a job: the request's `Prefer` and `Idempotency-Key`, making the job (or finding the one its key names),
and the answer the request gets: the job's own once it ends, or `202` with where to follow it."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

from flask import Response, current_app, g, jsonify, request
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from core.cpu import take_turn
from core.db import close_session
from core.errors import ApiError, Unavailable
from jobs.state import FINAL, abandon, stale_after_s, wait_for
from models import Job, utcnow

MAX_WAIT_S = 600
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII


@dataclass(frozen=True)
class Preferences:
    """What the client asked for: an answer at once (`respond-async`), a wait of N seconds, an idempotency key."""

    respond_async: bool = False
    wait_s: int | None = None
    idempotency_key: str | None = None


def read_preferences() -> Preferences:
    """The request's `Prefer` and `Idempotency-Key` headers; a malformed key is 400, unknown preferences ignored."""
    respond_async, wait_s = False, None
    for item in request.headers.getlist("Prefer"):
        for preference in item.split(","):
            token, _, value = preference.split(";")[0].strip().partition("=")
            token, value = token.strip().lower(), value.strip().strip('"')
            if token == "respond-async":
                respond_async = True
            elif token == "wait" and value.isascii() and value.isdigit() and int(value) >= 1:
                wait_s = min(int(value), MAX_WAIT_S)  # RFC 7240: a preference the server cannot honour is ignored
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError("Idempotency-Key must be 1 to 255 visible ASCII characters.", code="invalid_parameter",
                       field="Idempotency-Key")
    return Preferences(respond_async, wait_s, key)


def submit(kind: str, params: dict, preferences: Preferences, *, total: int = 1) -> Response:
    """Make the job of this request (or find the one its Idempotency-Key names), and answer as `Prefer` asks."""
    app = current_app._get_current_object()
    settings = app.extensions["settings"]
    route = request.url_rule.rule
    fingerprint = hashlib.sha256(json.dumps([kind, params], sort_keys=True).encode()).hexdigest()
    key = preferences.idempotency_key
    job, created = None, False
    with app.extensions["sessionmaker"]() as session:
        if key is not None:
            job = remembered_job(session, route, key)
        if job is None:
            job = Job(id=str(uuid.uuid4()), kind=kind, status="queued", params=params, route=route,
                      progress={"done": 0, "total": total, "themes": []},
                      request_id=g.get("request_id"), idempotency_key=key, fingerprint=fingerprint, attempts=0,
                      expires_at=utcnow() + timedelta(seconds=settings.idempotency_ttl_s) if key else None)
            session.add(job)
            try:
                session.commit()
                created = True
            except IntegrityError:  # a request with the same key made its job first: this one attaches to it
                session.rollback()
                job = remembered_job(session, route, key) if key else None
                if job is None:
                    raise
    if not created and job.fingerprint != fingerprint:
        raise ApiError("This Idempotency-Key was used with other parameters.", status=422,
                       code="idempotency_key_reused")
    g.job_id = job.id  # for the request's log line
    # The request's own session (its look-ups) is done: a request that runs or waits for its job holds no
    # database connection meanwhile. 50 waiting requests held every connection of the pool, the job's included.
    close_session()
    take_turn()  # requests that make jobs come in bursts: each goes on behind whatever else is ready (core/cpu.py)
    runner = app.extensions["jobs"]
    if created and runner.runs_in_request(preferences.respond_async, preferences.wait_s):
        with app.extensions["metrics"].waiting_for_job.track_inprogress():
            runner.run_here(job.id)
    elif created:
        try:
            runner.dispatch(job.id)
        except Unavailable as down:  # nobody will run it: it ends now, and the client may try again
            abandon(app, job.id, down)
            raise
    elif job.status in FINAL:
        response = final_answer(job)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    return answer(job, preferences)


def remembered_job(session, route: str, key: str) -> Job | None:
    """The job an unexpired Idempotency-Key names on this route; an expired key is forgotten here."""
    job = session.scalar(select(Job).where(Job.route == route, Job.idempotency_key == key))
    if job is not None and job.expires_at is not None and job.expires_at <= utcnow():
        session.execute(update(Job).where(Job.id == job.id).values(idempotency_key=None))
        session.commit()
        return None
    return job


def answer(job: Job, preferences: Preferences) -> Response:
    """The job's final answer if it ends within the wait asked for, else `202` with where to follow it."""
    applied = []
    if preferences.respond_async:
        applied.append("respond-async")
    if preferences.wait_s is not None:
        applied.append(f"wait={preferences.wait_s}")
        timeout = preferences.wait_s
    elif preferences.respond_async:
        timeout = 0
    else:  # no preference: wait as the first version did, but never forever on a job nobody runs
        timeout = 2 * stale_after_s(current_app.extensions["settings"])
    if timeout:
        with current_app.extensions["metrics"].waiting_for_job.track_inprogress():
            job = wait_for(current_app._get_current_object(), job.id, timeout)
        take_turn()  # a burst's jobs end together: its answers go behind whatever else is ready
    if job.status in FINAL:
        response = final_answer(job)
        if preferences.wait_s is not None:
            response.headers["Preference-Applied"] = f"wait={preferences.wait_s}"
        return response
    response = jsonify(job.to_dict())
    response.status_code = 202
    response.headers["Location"] = f"/jobs/{job.id}"
    if applied:
        response.headers["Preference-Applied"] = ", ".join(applied)
    return response


def final_answer(job: Job) -> Response:
    """The answer of an ended job: what a request that waited for it gets, the same every time."""
    body = job.result if job.status == "succeeded" else {**(job.error or {}), "job_id": job.id}
    response = jsonify(body)
    response.status_code = job.http_status or 500
    response.headers.update(job.headers or {})
    return response
