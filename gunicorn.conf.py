"""Gunicorn settings for this service: `gunicorn -c gunicorn.conf.py 'main:create_app()'` (run from this folder) and
`python main.py`, which runs exactly that.

Generation is waiting on vendors, so a worker serves each connection on a greenlet (gevent), not a thread: an open
connection (a request waiting for its job, an event stream, a slow client) costs a few kilobytes, and one worker
holds WORKER_CONNECTIONS of them at once. The app is built once in the master (`preload_app`) and warmed there, so
the workers share its memory and serve their first request warm. Every value comes from the service's settings
(environment or `.env`); gunicorn's command-line flags still win.
"""

# ruff: noqa: E402 - the imports below come after gevent's patching on purpose
from __future__ import annotations

# First, before the app or its libraries are imported (by preload_app, in this process): everything that blocks on a
# socket, a lock or a sleep must yield to the other greenlets, including module-level locks the app makes at import.
# gunicorn's gevent worker patches again after the fork, which is then a no-op.
import gevent
from gevent import monkey

monkey.patch_all()

from ops import gevent_sendfile

gevent_sendfile.install()  # PNG files go from disk to socket in the kernel, not through Python in 8 KiB blocks

import atexit
import ctypes
import ctypes.util
import gc
import glob
import logging
import os
import shutil
import tempfile
import time

from gunicorn.glogging import Logger

from core.errors import ConfigError
from core.settings import from_environment
from ops import gunicorn_errors, prefork
from ops.serving import startup_line
from providers import warm_up

try:
    _settings = from_environment()
except ConfigError as error:  # a setting the service cannot use: one line that names it, not a traceback
    raise SystemExit(str(error)) from None
# Requests gunicorn refuses itself (too long, malformed) are answered in the service's JSON error shape.
gunicorn_errors.install()
# Metrics are shared through files: one folder per server, wiped at start. prometheus_client reads this variable
# when first imported, which the app does in create_app, after this file has run.
_METRICS_DIR_PREFIX = "futurepast-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=_METRICS_DIR_PREFIX)

bind = f"{_settings.host}:{_settings.port}"
# Two workers: the service waits on providers, not on the CPU; a second process keeps the PNG routes off one GIL.
# On 2 cores this served as many requests as five workers, in 40% of the memory (README, Benchmarks).
workers = _settings.web_concurrency or 2
worker_class = "gevent"
worker_connections = _settings.worker_connections
# Built once in the master and forked: the workers share the imported code. Anything holding a socket (database
# pools) is reset in the child by an os.register_at_fork hook where it is made (models.make_engine).
preload_app = True
# A gevent worker tells the master it lives from a greenlet of its own, whatever its requests wait for: silent this
# long, its loop is stuck (CPU-bound work that escaped the thread pool), and the master replaces it.
timeout = 60
# On shutdown (SIGTERM) a request gets the slowest generation's time to finish what was paid for: the text call, then
# both image providers, each spending every retry; plus a margin.
graceful_timeout = int(3 * _settings.provider_timeout_s * (_settings.provider_retries + 1)) + 30
# Also the time a client gets to send a request's headers: a slow one (slowloris) is closed after it.
keepalive = 5
# A listening socket per worker: the kernel spreads keep-alive clients over the workers, instead of the first worker
# to wake taking most of them under one GIL (README, Benchmarks: +10% full PNG GETs, +20% 304s).
reuse_port = True
# sendfile (PNG files go from disk to socket without passing through Python, ops/gevent_sendfile.py) is on while
# `sendfile` stays unset here: gunicorn reads any value of it, True included, as "off".
# gunicornc's socket lives at one path per user: several servers on a machine would fight over it.
control_socket_disable = True
logconfig_dict = {
    "root": {"level": "INFO", "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        # The app logs one line per request with its request id (core/observability.py): gunicorn's would repeat it.
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        "alembic": {"level": "WARNING"},  # chatty at every start; core/schema.py says when it upgrades
    },
}


class AccessLogOff(Logger):
    """gunicorn gathers each request's access-log fields before its logger says whether it logs them; here it never
    does (the line above), and gathering them was a tenth of a PNG GET's time in Python."""

    def access(self, resp, req, environ, request_time) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


logger_class = AccessLogOff


def on_starting(server) -> None:
    """In the master, before any worker: start the metrics afresh, and warm the preloaded app (built already, so a
    bad setting, a production rule or an outdated database stopped the server before this)."""
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)
    app = server.app.wsgi()
    warm_up(app.extensions["settings"])
    prefork.build_lazy_parts(app)
    app.extensions["engine"].dispose()  # the workers open their own connections
    # Objects made so far live as long as the server: out of the collector's sight, its passes in the workers no
    # longer write to (and so copy) the pages they share with the master.
    gc.collect()
    gc.freeze()
    if _LIBC is not None:  # what start-up built and freed goes back to the system, not into every worker's copy
        _LIBC.malloc_trim(0)
    released = prefork.release_startup_code()
    server.log.info("Start-up code given back to the system: %d MB", released >> 20)


def _glibc():
    """The C library when it is glibc (it has malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _glibc()
# glibc gives each thread that contends for malloc an arena of its own (up to 8 per core) and keeps what is freed
# in it: after a burst of image work, each of a worker's threads held its peak for ever (PSS 430 MB after the
# benchmarks). Two arenas per process, set here so the forked workers inherit it, and a trim after heavy requests.
# A picture's buffers (4 MB for a 1024x1024 RGBA) are mapped and unmapped on their own: by default glibc raises its
# threshold to the size of the first one freed, after which they came from the arenas and stayed there.
if _LIBC is not None:
    _LIBC.mallopt(-8, 2)  # M_ARENA_MAX
    _LIBC.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD, fixed
# CPU time of the worker process while the request ran (its thread pool draws and encodes pictures), not wall time:
# on a busy machine a PNG GET can wait 50 ms for the CPU. Heavy requests are noted, and the worker trims once a
# second while they come, and once more after the last (a trim then, mid-burst, left the end of the burst unreturned).
HEAVY_REQUEST_CPU_S = 0.02
TRIM_EVERY_S = 1.0
_freed_since_trim = False


def pre_request(worker, req) -> None:
    req.cpu_at_start = time.process_time()


def post_request(worker, req, environ, resp) -> None:
    global _freed_since_trim
    if time.process_time() - getattr(req, "cpu_at_start", 0.0) >= HEAVY_REQUEST_CPU_S:
        _freed_since_trim = True


def _trim_after_heavy_requests() -> None:
    """Give what heavy requests (generation, seeding, long lists) freed back to the system."""
    global _freed_since_trim
    while True:
        time.sleep(TRIM_EVERY_S)  # gevent's sleep: the worker is patched
        if _freed_since_trim:
            _freed_since_trim = False
            _LIBC.malloc_trim(0)


_MASTER_PID = os.getpid()
# When preloading the app fails, gunicorn stops before it calls on_exit: the folder made above must go all the same.
atexit.register(lambda: os.getpid() == _MASTER_PID and on_exit(None))


def when_ready(server) -> None:
    """Say where the service listens: with a socket per worker (reuse_port), gunicorn's own line names no address."""
    for address in server.cfg.bind:
        url = address if address.startswith(("unix:", "fd://")) else f"http://{address}"
        server.log.info(startup_line(from_environment(), url))


def post_worker_init(worker) -> None:
    """Start the worker's job sweeper now, not at its first request: jobs left by a killed worker get run again
    even when no request comes; trim memory after heavy requests; and count the worker's open connections, from
    accept to close."""
    if _LIBC is not None:
        gevent.spawn(_trim_after_heavy_requests)
    extensions = getattr(worker.wsgi, "extensions", {})
    runner = extensions.get("jobs")
    if runner is not None:
        runner.start_sweeper()
    if "metrics" in extensions:
        handle, open_connections = worker.handle, extensions["metrics"].open_connections

        def counted(listener, client, address) -> None:
            with open_connections.track_inprogress():
                handle(listener, client, address)

        worker.handle = counted


def child_exit(server, worker) -> None:
    """Drop the live-only metrics of a worker that has gone; its counts stay in the totals."""
    from prometheus_client import multiprocess  # imported once the folder above is set

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    """Remove the metrics folder this file made."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(path).startswith(_METRICS_DIR_PREFIX):
        shutil.rmtree(path, ignore_errors=True)
