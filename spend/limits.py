"""The rate limits of routes (GENERATION_RATE_LIMIT, VERIFY_RATE_LIMIT): one count per client address and route for
the whole service, kept where the shared counters are."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from core import shared_counters
from core.settings import Settings


def limit_routes(app: Flask, settings: Settings, limits: Mapping[str, str | None]) -> None:
    """Apply each endpoint's rate limit (None: no limit) per client address, each endpoint counted separately."""
    limits = {endpoint: limit for endpoint, limit in limits.items() if limit}
    if not limits:
        return
    # One count for every worker and machine: in the database, or where RATELIMIT_STORAGE_URI says.
    storage_uri, storage_options = shared_counters.limiter_storage(app.extensions["engine"],
                                                                   settings.ratelimit_storage_uri)
    limiter = Limiter(
        get_remote_address, app=app, storage_uri=storage_uri, storage_options=storage_options,
        headers_enabled=True, default_limits=[],
    )
    for endpoint, limit in limits.items():
        app.view_functions[endpoint] = limiter.limit(limit)(app.view_functions[endpoint])
