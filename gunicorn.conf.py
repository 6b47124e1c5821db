"""Gunicorn settings for this service: `gunicorn 'main:create_app()'` (run from this folder) and `python main.py`.

Generation calls are long and mostly waiting on a provider, so each worker process serves several requests at
once on threads; workers get longer than the slowest generation before they are cut off. Every value comes from
the service's settings (environment or `.env`); gunicorn's command-line flags still win.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

from config import from_environment
from main import create_app

_settings = from_environment()
# Metrics are shared through files: one folder per server, wiped at start. prometheus_client reads this variable
# when first imported, which the app does in create_app, after this file has run.
_METRICS_DIR_PREFIX = "futurepast-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=_METRICS_DIR_PREFIX)

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency or 2 * (os.cpu_count() or 1) + 1
worker_class = "gthread"
threads = _settings.worker_threads
# The slowest request: the text call, then both image providers, each spending every retry; plus a margin.
# A worker busy that long is stuck; on shutdown (SIGTERM) a request gets that long to finish what was paid for.
timeout = int(3 * _settings.provider_timeout_s * (_settings.provider_retries + 1)) + 30
graceful_timeout = timeout
keepalive = 5
# A listening socket per worker: the kernel spreads keep-alive clients over the workers, instead of the first worker
# to wake taking most of them under one GIL (README, Benchmarks: +10% full PNG GETs, +20% 304s).
reuse_port = True
# sendfile (PNG files go from disk to socket without passing through Python) is on while `sendfile` stays unset
# here: gunicorn reads any value of it, True included, as "off".
# gunicornc's socket lives at one path per user: several servers on a machine would fight over it.
control_socket_disable = True
logconfig_dict = {
    "root": {"level": "INFO", "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        # The app logs one line per request with its request id (observability.py): gunicorn's would repeat it.
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        "alembic": {"level": "WARNING"},  # chatty at every start; migrate.py says when it upgrades
    },
}


def on_starting(server) -> None:
    """In the master, before any worker: start the metrics afresh, and build the app once, so a bad setting,
    a production rule or an outdated database stops the server here, and development migrates once."""
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)
    try:
        create_app().extensions["engine"].dispose()
    except BaseException:
        on_exit(server)  # gunicorn will not call it: the server stops before it starts
        raise


def post_worker_init(worker) -> None:
    """Start the worker's job sweeper now, not at its first request: jobs left by a killed worker get run again
    even when no request comes."""
    runner = getattr(worker.wsgi, "extensions", {}).get("jobs")
    if runner is not None:
        runner.start_sweeper()


def child_exit(server, worker) -> None:
    """Drop the live-only metrics of a worker that has gone; its counts stay in the totals."""
    from prometheus_client import multiprocess  # imported once the folder above is set

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    """Remove the metrics folder this file made."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if os.path.basename(path).startswith(_METRICS_DIR_PREFIX):
        shutil.rmtree(path, ignore_errors=True)
