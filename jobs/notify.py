"""The job notification channel of a process: a job's changes reach the event streams and the waiting requests of
every process, through one listener per process that wakes the subscribers of that job.

- Redis pub/sub when RATELIMIT_STORAGE_URI is Redis (where the shared counters are kept);
- else PostgreSQL `LISTEN`/`NOTIFY` when the database is PostgreSQL;
- else (SQLite) in-process; when other processes may change jobs too (Celery workers, or more than one web worker:
  WEB_CONCURRENCY is not 1), plus one query per POLL_S for the jobs that this process's subscribers follow.

A notification only says "this job changed": a subscriber then reads the job's row, which stays the one truth. Whoever
commits a change to a job's row calls `publish(job_id)` (jobs/state.py, the cancel route). Threads here are plain
`threading` ones, so under gevent's monkey-patching they are greenlets and every wait is cooperative.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, select, text

from core.settings import Settings
from core.shared_counters import uses_redis
from models import Job

log = logging.getLogger(__name__)

CHANNEL = "futurepast_jobs"
POLL_S = 1.0  # SQLite: how often this process reads the rows of the jobs its subscribers follow
LISTEN_TIMEOUT_S = 2.0  # how often a listener looks up from its socket to see whether it should stop
RECONNECT_S = (0.1, 5.0)  # first and longest wait before a lost listener connects again
POLL_BATCH = 500


class Subscription:
    """One subscriber's wake-up call for one job."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def wait(self, timeout: float | None) -> bool:
        """Wait until the job may have changed (True) or `timeout` passes (False); read the row after either."""
        fired = self.event.wait(timeout)
        self.event.clear()
        return fired


class Channel:
    """In-process delivery: what one process publishes wakes its own subscribers. The base of the others."""

    kind = "in-process"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscribers: dict[str, set[Subscription]] = {}
        self.listener: threading.Thread | None = None
        self.pid = os.getpid()
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.connected.set()

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """Be woken at each change of the job while inside; subscribe before reading the row, so no change is lost."""
        subscription = Subscription()
        with self.lock:
            self.subscribers.setdefault(job_id, set()).add(subscription)
        self.start()
        try:
            yield subscription
        finally:
            with self.lock:
                followers = self.subscribers.get(job_id, set())
                followers.discard(subscription)
                if not followers:
                    self.subscribers.pop(job_id, None)

    def publish(self, job_id: str) -> None:
        """Say that the job's row changed (call it after the commit)."""
        self.deliver(job_id)

    def deliver(self, job_id: str) -> None:
        with self.lock:
            followers = list(self.subscribers.get(job_id, ()))
        for subscription in followers:
            subscription.event.set()

    def deliver_all(self) -> None:
        """Wake every subscriber: after the listener was away, any job may have changed unseen."""
        with self.lock:
            followers = [subscription for group in self.subscribers.values() for subscription in group]
        for subscription in followers:
            subscription.event.set()

    def following(self) -> list[str]:
        with self.lock:
            return list(self.subscribers)

    def start(self) -> None:
        """Start this process's listener, once (a forked process starts its own)."""
        if self.listens() and not self.running():
            with self.lock:
                if self.running():
                    return
                self.pid, self.stopping = os.getpid(), threading.Event()
                self.connected.clear()
                self.listener = threading.Thread(target=self.run, daemon=True, name="job-channel")
                self.listener.start()

    def running(self) -> bool:
        return self.listener is not None and self.listener.is_alive() and self.pid == os.getpid()

    def listens(self) -> bool:
        return False

    def run(self) -> None:
        """Listen until closed; a lost connection is made again, and every subscriber then looks again."""
        wait = RECONNECT_S[0]
        while not self.stopping.is_set():
            try:
                self.listen()
                wait = RECONNECT_S[0]
            except Exception as error:
                self.connected.clear()
                log.warning("job notification channel (%s) lost: %s; connecting again in %.1f s", self.kind,
                            type(error).__name__, wait)
                self.stopping.wait(wait)
                wait = min(wait * 2, RECONNECT_S[1])

    def listen(self) -> None:
        raise NotImplementedError

    def listening(self) -> None:
        """Called by a listener once the server has it subscribed."""
        self.connected.set()
        self.deliver_all()

    def status(self, timeout: float = 2.0) -> str:
        """'ok' when the channel carries notifications now, else what is wrong (for /healthz)."""
        self.start()
        return "ok" if self.connected.wait(timeout) else "unreachable"

    def ping(self, timeout: float = 2.0) -> bool:
        """Whether the channel carries notifications now."""
        return self.status(timeout) == "ok"

    def close(self) -> None:
        """Stop the listener (it ends within LISTEN_TIMEOUT_S)."""
        self.stopping.set()


class PostgresChannel(Channel):
    """PostgreSQL `LISTEN`/`NOTIFY` on a connection of the listener's own (psycopg 3, autocommit)."""

    kind = "postgresql"

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def listens(self) -> bool:
        return True

    def publish(self, job_id: str) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(text("SELECT pg_notify(:channel, :job_id)"), {"channel": CHANNEL, "job_id": job_id})
        except Exception:  # the row is saved: a stream sees it at its next change or reconnection
            log.warning("job %s: could not notify its change", job_id, exc_info=True)

    def listen(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f"LISTEN {CHANNEL}")
            self.listening()
            while not self.stopping.is_set():
                for notification in connection.notifies(timeout=LISTEN_TIMEOUT_S):
                    self.deliver(notification.payload)


class RedisChannel(Channel):
    """Redis pub/sub: one subscribed connection per process, and the publishers' own pool."""

    kind = "redis"

    def __init__(self, url: str) -> None:
        import redis

        super().__init__()
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)

    def listens(self) -> bool:
        return True

    def publish(self, job_id: str) -> None:
        try:
            self.client.publish(CHANNEL, job_id)
        except Exception:
            log.warning("job %s: could not notify its change", job_id, exc_info=True)

    def listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(CHANNEL)
            while not self.stopping.is_set():
                message = pubsub.get_message(timeout=LISTEN_TIMEOUT_S)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self.listening()
                elif message["type"] == "message":
                    self.deliver(message["data"].decode())
        finally:
            pubsub.close()

    def close(self) -> None:
        super().close()
        self.client.close()


class PollingChannel(Channel):
    """SQLite: in-process delivery, and one query per POLL_S while anyone follows a job, for changes made elsewhere."""

    kind = "sqlite"

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.seen: dict[str, tuple] = {}

    def listens(self) -> bool:
        return True

    def listen(self) -> None:
        self.listening()
        while not self.stopping.wait(POLL_S):
            followed = self.following()
            self.seen = {job_id: state for job_id, state in self.seen.items() if job_id in followed}
            for start in range(0, len(followed), POLL_BATCH):
                query = select(Job.id, Job.status, Job.progress).where(Job.id.in_(followed[start:start + POLL_BATCH]))
                with self.engine.connect() as connection:
                    rows = connection.execute(query).all()
                for job_id, status, progress in rows:
                    state = (status, (progress or {}).get("done"))
                    if self.seen.get(job_id) != state:
                        self.seen[job_id] = state
                        self.deliver(job_id)


def channel_for(settings: Settings, engine: Engine) -> Channel:
    """The channel of this service's configuration."""
    if uses_redis(settings.ratelimit_storage_uri):
        return RedisChannel(settings.ratelimit_storage_uri)
    if engine.dialect.name == "postgresql":
        return PostgresChannel(engine)
    if settings.celery_broker_url or settings.web_concurrency != 1:
        return PollingChannel(engine)
    return Channel()
