"""Limits and spend, shared by every process: the rate limit of the generating routes, the daily budget, and
`/usage` with its `flask usage` command, which read the ledger (`core/ledger.py`) back."""

from __future__ import annotations

from flask import Flask

from spend.budget import budget_remaining
from spend.usage import bp, usage_command


def init_app(app: Flask) -> None:
    """Register `/usage` and its command, and refresh the budget and credit metrics at each scrape."""
    metrics = app.extensions["metrics"]
    ledger = app.extensions["ledger"]

    def refresh() -> None:  # read at each scrape from the shared store, so every worker reports the same
        left = budget_remaining(app)
        if left is not None:
            metrics.budget_remaining.set(left)
        credits = ledger.credits("clipdrop")
        if credits is not None:
            metrics.credits.labels("clipdrop").set(credits)

    metrics.refreshers.append(refresh)
    app.register_blueprint(bp)
    app.cli.add_command(usage_command)
