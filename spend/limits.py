"""The rate limits of routes (GENERATION_RATE_LIMIT, VERIFY_RATE_LIMIT): one count per client address and route for
the whole service, kept where the shared counters are."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial, wraps

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from core import shared_counters
from core.errors import first_line
from core.settings import Settings


class OneLineWarning(logging.Filter):
    """flask-limiter logs each error it swallows with its traceback, at ERROR: with RATELIMIT_FAIL_OPEN=1 a store
    that is down is expected, so say it in one WARNING line per request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()} (RATELIMIT_FAIL_OPEN=1, the limit is skipped): " \
                         f"{first_line(record.exc_info[1])}"
            record.args, record.exc_info, record.exc_text = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def add_filter_once(logger: logging.Logger, added: logging.Filter) -> None:
    if not any(type(existing) is type(added) for existing in logger.filters):
        logger.addFilter(added)


def only_around(app: Flask, limiter: Limiter, endpoints: frozenset[str]) -> None:
    """Run the hooks flask-limiter registers around every request only for `endpoints`: for the others they find no
    limit, and cost a PNG GET an eighth of its time in Python doing so."""

    def owned(hook) -> bool:
        return getattr(hook, "__self__", None) is limiter or (isinstance(hook, partial) and limiter in hook.args)

    def scoped(hook, passes_through: bool):
        @wraps(hook)
        def run(*args):
            if request.endpoint in endpoints:
                return hook(*args)
            return args[0] if passes_through else None  # an after_request hook hands the response on

        return run

    for hooks, passes_through in ((app.before_request_funcs, False), (app.after_request_funcs, True),
                                  (app.teardown_request_funcs, False)):
        hooks[None] = [scoped(hook, passes_through) if owned(hook) else hook for hook in hooks.get(None, [])]


def limit_routes(app: Flask, settings: Settings, limits: Mapping[str, str | None]) -> None:
    """Apply each endpoint's rate limit (None: no limit) per client address, each endpoint counted separately."""
    limits = {endpoint: limit for endpoint, limit in limits.items() if limit}
    if not limits:
        return
    # One count for every worker and machine: in the database, or where RATELIMIT_STORAGE_URI says.
    storage_uri, storage_options = shared_counters.limiter_storage(app.extensions["engine"],
                                                                   settings.ratelimit_storage_uri)
    # The store down: a 503 limits_unavailable (core/errors.py), or with RATELIMIT_FAIL_OPEN=1 no limit, logged.
    limiter = Limiter(
        get_remote_address, app=app, storage_uri=storage_uri, storage_options=storage_options,
        headers_enabled=True, default_limits=[], swallow_errors=settings.ratelimit_fail_open,
    )
    only_around(app, limiter, frozenset(limits))
    if settings.ratelimit_fail_open:
        add_filter_once(logging.getLogger("flask-limiter"), OneLineWarning())
    for endpoint, limit in limits.items():
        app.view_functions[endpoint] = limiter.limit(limit)(app.view_functions[endpoint])
