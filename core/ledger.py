"""The ledger: a row in `provider_calls` for every attempt at a provider call, with what the vendor reported and
what it cost.

Each attempt (retries included) is recorded where it is made: `core.http_client.post` for the requests-based image
providers, the OpenAI provider's own transport for the SDK. A provider that makes no HTTP call (the local ones)
gets one row at cost 0 from `calls()`. What an attempt cost is the vendor's own business: each provider module has
a `bill(status, headers, usage, settings)` that reads the vendor's figures and prices them with the PRICE_*
settings. Reading the rows back (`/usage`, the budget) is the `spend` package's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import ModuleType

from sqlalchemy import Engine, func, insert, select

from core.observability import current_call
from core.settings import Settings
from core.shared_counters import SharedState
from models import ProviderCall

log = logging.getLogger(__name__)

OK, FAILED, NO_ANSWER = "ok", "failed", "no_answer"
CACHED = "cached"  # a picture reused from the image cache (core/image_cache.py): no vendor call, cost 0
# A provider's `bill(status, headers, usage, settings)`: the ledger columns of one attempt (credits, tokens,
# remaining_credits, cost_usd).
Bill = Callable[[int | None, Mapping[str, str], Mapping[str, object], Settings], dict]


def utc_now() -> datetime:
    """Now, in UTC (tests freeze it with time-machine)."""
    return datetime.now(UTC)


def vendor_number(value: object) -> float | None:
    """A non-negative number a vendor reported (a header, a JSON field), or None when absent or unreadable."""
    try:
        number = float(str(value).strip()) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


class Ledger:
    """Writes the rows, each in a short transaction of its own, and reads back what a day cost."""

    def __init__(self, engine: Engine, settings: Settings, state: SharedState | None = None,
                 cost_counter=None) -> None:
        self.engine = engine
        self.settings = settings
        self.state = state  # where the last credit count is shared with every process
        self.cost_counter = cost_counter  # Prometheus provider_cost_usd_total, when metrics are on

    def record(self, **row) -> None:
        """Write one row; a failure is logged and never reaches the generation."""
        call = current_call()
        now = utc_now()
        row = {"created_at": now, "day": now.date().isoformat(), "route": call.route, "job_id": call.job_id,
               "request_id": call.request_id, **row}
        row.setdefault("cost_usd", 0.0)
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(ProviderCall).values(**row))
        except Exception:
            log.exception("could not write the ledger row of a %s call", row.get("provider"))
        if self.cost_counter is not None:
            self.cost_counter.labels(row["provider"]).inc(row["cost_usd"])

    def note_credits(self, provider: str, remaining: int) -> None:
        """Share the credits a provider says are left, for every process's metrics."""
        log.info("%s: %d credits left", provider, remaining)
        if self.state is not None:
            try:
                self.state.put(f"credits:{provider}", remaining)
            except Exception:
                log.exception("could not share the credits of %s", provider)

    def credits(self, provider: str) -> int | None:
        """The credits the provider's last answer said were left, in any process; None when unknown."""
        return self.state.get(f"credits:{provider}") if self.state is not None else None

    def spent(self, day: date) -> float:
        """The cost of every call on that UTC day."""
        query = select(func.coalesce(func.sum(ProviderCall.cost_usd), 0.0)).where(
            ProviderCall.day == day.isoformat())
        with self.engine.connect() as connection:
            return float(connection.execute(query).scalar_one())


# --- recording attempts ---------------------------------------------------------------------------


@dataclass
class _Call:
    """The provider call under way in this thread, and how many attempts it has recorded."""

    ledger: Ledger
    kind: str
    provider: str
    model: str
    bill: Bill | None
    attempts: int = 0


_current: ContextVar[_Call | None] = ContextVar("ledger_call", default=None)


@contextmanager
def calls(ledger: Ledger | None, kind: str, provider: ModuleType) -> Iterator[None]:
    """Record the attempts of one provider call; a call that made none (a local provider) gets one row, cost 0."""
    if ledger is None:
        yield
        return
    call = _Call(ledger, kind, provider.NAME, getattr(provider, "MODEL", provider.NAME),
                 getattr(provider, "bill", None))
    token = _current.set(call)
    started = time.perf_counter()
    outcome = FAILED
    try:
        yield
        outcome = OK
    finally:
        _current.reset(token)
        if call.attempts == 0:
            ledger.record(provider=call.provider, model=call.model, kind=kind, outcome=outcome,
                          latency_ms=(time.perf_counter() - started) * 1000)


def record_attempt(*, seconds: float, status: int | None = None, headers: Mapping[str, str] | None = None,
                   usage: Mapping[str, object] | None = None, model: str | None = None) -> None:
    """Record one HTTP attempt of the provider call under way; `status` None means no answer came."""
    call = _current.get()
    if call is None:
        return
    call.attempts += 1
    outcome = NO_ANSWER if status is None else OK if 200 <= status < 300 else FAILED
    figures: dict = {}
    if call.bill is not None:
        try:
            figures = call.bill(status, headers or {}, usage or {}, call.ledger.settings)
        except Exception:
            log.exception("could not read the figures of a %s answer", call.provider)
    if figures.get("remaining_credits") is not None:
        call.ledger.note_credits(call.provider, figures["remaining_credits"])
    call.ledger.record(provider=call.provider, model=model or call.model, kind=call.kind, outcome=outcome,
                       status=status, latency_ms=seconds * 1000, **figures)
