"""Generation as durable jobs: the job kinds, where they run (a pool in this process, or Celery workers), the
answers a generating request gets (`Prefer`, `Idempotency-Key`), and the `/jobs` routes.

The job row is the truth: a queue (the pool's or the broker's) only carries a job's id. A runner claims a job
with one atomic UPDATE, so one runner at a time runs it; it keeps a heartbeat while it runs, and a job whose
heartbeat stops (its process died) is claimed again, once, after JOB_STALE_S. Every row a job saves commits
together with a `job_outputs` link whose primary key (job, slot) refuses a second one: however often a job runs,
it saves each storefront or achievement once.

Celery workers: `celery -A jobs worker` (see the README, Deployment). Each service process runs a sweeper thread
(from its first request, or as a gunicorn worker boots; `app.config["JOB_SWEEPER"]` turns it on or off, and it is
off by default under TESTING).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

import observability
from errors import ApiError, NotFound, ProviderError
from models import Achievement, Job, JobOutput, Storefront, User, utcnow
from params import param, parse_int, require_admin
from provider_types import GeneratedImage
from providers import badge_spec, storefront_spec

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__)

STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
FINAL = frozenset({"succeeded", "failed", "canceled"})
MAX_ATTEMPTS = 2  # a job whose runner died is run once more, never a third time
MAX_THEME_WORKERS = 4
MAX_WAIT_S = 600
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII
KEEPALIVE_S = 15
POLL_FIRST_S, POLL_MAX_S = 0.05, 0.5
TASK_NAME = "jobs.run_job"
QUEUE = "futurepast-jobs"
ACHIEVEMENT_SLOT = "achievement"

# The loggers of provider calls: their lines get the job id (JobIdFilter).
PROVIDER_LOGGERS = ("providers", "http_client", "clipdrop_gen", "stability_gen", "achievement_gen",
                    "local_image_gen", "local_achievement_gen")

# Woken whenever a job of this process makes progress or ends, so waiters here need not poll the database.
changed = threading.Condition()


# --- timing ---------------------------------------------------------------------------------------


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


# --- asking for a job -----------------------------------------------------------------------------


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
    if created and app.extensions["jobs"].runs_in_request(preferences):
        execute(app, job.id)
    elif created:
        app.extensions["jobs"].dispatch(job.id)
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
        job = wait_for(current_app._get_current_object(), job.id, timeout)
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


def load(app: Flask, job_id: str) -> Job | None:
    with app.extensions["sessionmaker"]() as session:
        return session.get(Job, job_id)


def wait_for(app: Flask, job_id: str, timeout: float) -> Job:
    """The job once it has ended, or as it stands after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = POLL_FIRST_S
    while True:
        job = load(app, job_id)
        remaining = deadline - time.monotonic()
        if job.status in FINAL or remaining <= 0:
            return job
        with changed:
            changed.wait(min(delay, remaining))
        delay = min(delay * 1.5, POLL_MAX_S)


# --- running a job --------------------------------------------------------------------------------


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
    return attempt


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
    try:
        status, http_status, error, headers = "succeeded", 200, None, {}
        result = KINDS[job.kind](app, job, Progress(app, job, attempt))
    except ApiError as failure:
        status, http_status, result, error, headers = "failed", failure.status, None, failure.to_dict(), failure.headers
    except Exception:
        log.exception("job %s failed unexpectedly", job_id)
        status, http_status, result, headers = "failed", 500, None, {}
        error = {"error": "The server hit an unexpected error.", "code": "internal_error"}
    finally:
        stop.set()
        observability.call_context.reset(token)
    ended = finish(app, job_id, attempt, status=status, http_status=http_status, result=result, error=error,
                   headers=headers or None)
    if ended:
        app.extensions["metrics"].count_job(job.kind, status, time.perf_counter() - started)
        log.info("job %s %s (%d) in %.1f s", job_id, status, http_status, time.perf_counter() - started)
    return status if ended else None


def finish(app: Flask, job_id: str, attempt: int | None, **values) -> bool:
    """Record the job's end, unless another runner has taken it over since (then its run decides)."""
    condition = [Job.id == job_id, Job.status == "running"]
    if attempt is not None:
        condition.append(Job.attempts == attempt)
    with app.extensions["sessionmaker"]() as session:
        ended = session.execute(update(Job).where(*condition).values(finished_at=utcnow(), **values)).rowcount
        session.commit()
    notify()
    return bool(ended)


def notify() -> None:
    with changed:
        changed.notify_all()


def keep_alive(app: Flask, job_id: str, attempt: int, stop: threading.Event) -> None:
    """Beat the job's heartbeat until it ends, so no other runner takes it over while this one lives."""
    interval = heartbeat_s(app.extensions["settings"])
    while not stop.wait(interval):
        try:
            with app.extensions["sessionmaker"]() as session:
                session.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
                                .values(heartbeat_at=utcnow()))
                session.commit()
        except Exception:  # a missed beat is not fatal; the next one may succeed
            log.warning("job %s: heartbeat failed", job_id, exc_info=True)


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
        notify()

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
                for name, value in put(image.png, size=(image.width, image.height)).columns().items():
                    setattr(row, name, value)
                session.add(row)
                session.flush()
                link = {"storefront_id": row.id} if isinstance(row, Storefront) else {"achievement_id": row.id}
                session.add(JobOutput(job_id=job_id, slot=slot, **link))
        except IntegrityError:
            log.warning("job %s: %s was already saved by another run; this one is dropped", job_id, slot)


def make_storefronts(app: Flask, job: Job, progress: Progress) -> dict:
    """One storefront per theme, themes generated concurrently; progress reported as each theme ends."""
    generator = app.extensions["generator"]
    with app.extensions["sessionmaker"]() as session:
        user = session.get(User, job.params["user_id"])
        if user is None:  # deleted since the request
            raise NotFound(f"No user has id {job.params['user_id']}.", code="user_not_found")
        user_id, user_name, recommendations = user.id, user.name, dict(user.recommendations or {})
    shop_theme = job.params["shop_theme"]
    themes = list(recommendations) if shop_theme == "all" else [shop_theme]
    if not themes or any(theme not in recommendations for theme in themes):
        raise NotFound("Mismatch of Themes", code="theme_not_found", field="shop_theme")
    done = saved_outputs(app, job.id)
    progress.start(len(themes), [theme for theme in themes if theme in done])
    errors: dict[str, ProviderError] = {}

    specs = {theme: storefront_spec(theme, list(recommendations[theme])) for theme in themes}

    def make(theme: str):
        try:
            return generator.generate_image(specs[theme])
        except ProviderError as error:
            errors[theme] = error
            return None
        finally:
            progress.advance(theme)

    todo = [theme for theme in themes if theme not in done]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_THEME_WORKERS, len(todo)))) as pool:
        # Each theme's thread runs in a copy of this context: the job's call context and the app context.
        futures = [pool.submit(contextvars.copy_context().run, make, theme) for theme in todo]
        for theme, future in zip(todo, futures, strict=True):  # saved in the user's order of themes, as ids say
            image = future.result()
            if image is not None:
                row = Storefront(user_id=user_id, name=f"{user_name}_{theme}", description=specs[theme].prompt,
                                 style=theme)
                save_once(app, job.id, theme, row, image)

    with app.extensions["sessionmaker"]() as session:
        made = session.scalars(select(Storefront).join(JobOutput, JobOutput.storefront_id == Storefront.id)
                               .where(JobOutput.job_id == job.id)).all()
    by_theme = {storefront.style: storefront for storefront in made}
    made = [by_theme[theme] for theme in themes if theme in by_theme]
    failed = [(theme, errors[theme]) for theme in themes if theme in errors]
    if not made:
        raise combined_error([error for _theme, error in failed])
    body = {"user name": user_name, "recommendations": recommendations,
            "storefronts": [storefront.to_dict() for storefront in made]}
    if failed:
        body["errors"] = [{"theme": theme, "error": error.message, "code": error.code} for theme, error in failed]
    return {**body, "job_id": job.id}


def combined_error(errors: list[ProviderError]) -> ProviderError:
    """The answer when every theme failed: their shared error, else a generic provider error."""
    if len({error.code for error in errors}) == 1:
        return errors[-1]
    return ProviderError(errors[-1].provider, "Every theme failed to generate.")


def make_achievement(app: Flask, job: Job, progress: Progress) -> dict:
    """The achievement's text, then its badge image; saved once however often the job runs."""
    if ACHIEVEMENT_SLOT not in saved_outputs(app, job.id):
        generator = app.extensions["generator"]
        draft = generator.write_achievement(date.fromisoformat(job.params["date"]), job.params["product"])
        image = generator.generate_image(badge_spec(draft))
        row = Achievement(name=draft.name, description=draft.description, occasion=draft.occasion,
                          product_type=draft.product_type)
        save_once(app, job.id, ACHIEVEMENT_SLOT, row, image)
    progress.advance(ACHIEVEMENT_SLOT)
    with app.extensions["sessionmaker"]() as session:
        achievement = session.scalar(select(Achievement).join(JobOutput, JobOutput.achievement_id == Achievement.id)
                                     .where(JobOutput.job_id == job.id))
        return {"achievement_name": achievement.name, **achievement.to_dict(), "job_id": job.id}


# Each kind makes its rows and returns the body of its 200 answer; a failure is raised as an ApiError.
KINDS = {"storefronts": make_storefronts, "achievement": make_achievement}


# --- where jobs run -------------------------------------------------------------------------------


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
        """Hand the job to a runner; it may already be running elsewhere (the claim decides)."""
        if self.settings.celery_broker_url:
            try:
                self.app.extensions["celery"].send_task(TASK_NAME, args=[job_id], queue=QUEUE)
            except Exception:  # the broker is down: the job stays queued, and the sweeper sends it again later
                log.exception("job %s: could not reach the broker", job_id)
        else:
            self.local_pool().submit(self.run, job_id)

    def runs_in_request(self, preferences: Preferences) -> bool:
        """Whether the request's own thread runs its job: with no broker, a request that waits for its job without a
        `Prefer` would only sit idle while a pool thread worked, and would queue behind its slots; the pool is kept
        for the jobs that nobody waits on. The job is claimed, beats and is swept like any other."""
        return not self.settings.celery_broker_url and not preferences.respond_async and preferences.wait_s is None

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
            except Exception:
                log.warning("job sweeper: this round failed", exc_info=True)

    def sweep(self) -> None:
        """Fail the jobs that went silent twice, and re-dispatch the others that went silent or were never run."""
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
            self.dispatch(job_id)

    def shutdown(self) -> None:
        """Stop the sweeper and wait for this process's running jobs."""
        self.stopping.set()
        if self.pool is not None and self.pid == os.getpid():
            self.pool.shutdown(wait=True)
        if "celery" in self.app.extensions:  # its broker connections, those lent out included
            self.app.extensions["celery"].pool.force_close_all()
            self.app.extensions["celery"].close()


# --- Celery ---------------------------------------------------------------------------------------


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


def __getattr__(name: str):
    """`celery -A jobs worker` asks this module for `celery`: the Celery app of a service built from the settings."""
    if name == "celery":
        from main import create_app

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        app = create_app()
        if "celery" not in app.extensions:
            raise SystemExit("CELERY_BROKER_URL is not set: there is no broker for a worker to read jobs from")
        return app.extensions["celery"]
    raise AttributeError(name)


# --- the app's side -------------------------------------------------------------------------------


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
    if app.extensions["settings"].celery_broker_url:
        celery_init_app(app)
    app.extensions["jobs"] = Runner(app)
    app.register_blueprint(bp)


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
