"""GENERATION_RATE_LIMIT: one count per client address for the whole service, kept where the shared counters are."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from core import shared_counters
from core.settings import Settings


def limit_generation(app: Flask, settings: Settings, endpoints: Iterable[str]) -> None:
    """Apply GENERATION_RATE_LIMIT per client address to each of `endpoints`, counted separately."""
    if not settings.generation_rate_limit:
        return
    # One count for every worker and machine: in the database, or where RATELIMIT_STORAGE_URI says.
    storage_uri, storage_options = shared_counters.limiter_storage(app.extensions["engine"],
                                                                   settings.ratelimit_storage_uri)
    limiter = Limiter(
        get_remote_address, app=app, storage_uri=storage_uri, storage_options=storage_options,
        headers_enabled=True, default_limits=[],
    )
    for endpoint in endpoints:
        app.view_functions[endpoint] = limiter.limit(settings.generation_rate_limit)(app.view_functions[endpoint])
