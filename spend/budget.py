"""The daily budget (GENERATION_BUDGET_USD, UTC days): generation is refused once the day's ledger cost reaches it."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from flask import current_app

from core.errors import ApiError
from core.ledger import Ledger, utc_now
from core.settings import Settings

log = logging.getLogger(__name__)

LOCAL = "local"
WARN_AT = 0.8


def check_budget() -> None:
    """Refuse generation with 429 budget_exhausted once today's cost (UTC) reaches GENERATION_BUDGET_USD."""
    app = current_app
    settings: Settings = app.extensions["settings"]
    budget = settings.generation_budget_usd
    if budget is None or only_local(app):
        return
    ledger: Ledger = app.extensions["ledger"]
    now = utc_now()
    spent = round(ledger.spent(now.date()), 9)  # sums of floats: 0.01 x 3 is 0.030000000000000002
    if spent >= round(WARN_AT * budget, 9) and first_warning(ledger, now.date()):
        log.warning("%.0f%% of today's generation budget is spent (%.4f of %g USD)", spent / budget * 100 if budget
                    else 100, spent, budget)
    if spent >= budget:
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        raise ApiError(
            f"Today's generation budget of {budget:g} USD is spent; generation resumes at 00:00 UTC.",
            status=429, code="budget_exhausted", budget_usd=budget, spent_usd=round(spent, 6),
            headers={"Retry-After": str(max(1, int((midnight - now).total_seconds() + 0.999)))},
        )


def first_warning(ledger: Ledger, day: date) -> bool:
    """True for the one request of the whole service that is first to see the day's spend reach the warning."""
    if ledger.state is None:
        return True
    try:
        return ledger.state.claim(f"budget-warned:{day}", 2 * 86400)
    except Exception:  # the shared store is down: a warning too many beats a failed generation
        log.exception("could not share the budget warning")
        return True


def only_local(app) -> bool:
    """True when every provider the settings chose is a local one: those are never refused."""
    generator = app.extensions["generator"]
    return all(p.NAME == LOCAL for p in [*generator.image_chain, generator.text_provider])


def budget_remaining(app) -> float | None:
    """What is left of today's budget, in USD; None without a budget."""
    budget = app.extensions["settings"].generation_budget_usd
    if budget is None:
        return None
    return max(0.0, budget - app.extensions["ledger"].spent(utc_now().date()))
