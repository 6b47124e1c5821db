"""Spend: a ledger row for every provider call attempt with its cost, `/usage`, the daily budget and its CLI.

Each attempt (retries included) is recorded where it is made: `http_client.post` for the requests-based image
providers, `RecordingTransport` for the OpenAI SDK. A provider that makes no HTTP call (the local ones) gets one
row at cost 0 from `calls()`. The cost comes from the vendor's own figures and the price table (`Prices`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import ModuleType

import click
import httpx2
from flask import Blueprint, current_app, jsonify, request
from flask.cli import with_appcontext
from sqlalchemy import Engine, Float, Integer, String, case, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from config import Settings
from counters import SharedState
from errors import ApiError, InvalidParameter
from models import Base, Id, UTCDateTime, utcnow
from observability import current_call
from params import require_admin

log = logging.getLogger(__name__)
bp = Blueprint("spend", __name__)

OK, FAILED, NO_ANSWER = "ok", "failed", "no_answer"
LOCAL = "local"
# Stability AI's credits per generation by engine (1 credit = 0.01 USD); `sd3` is its default model,
# sd3.5-large. Failed generations are not charged. See README, "Spend and limits", for the source.
STABILITY_CREDITS = {"core": 3.0, "ultra": 8.0, "sd3": 6.5}
GROUPS = ("provider", "day", "route")
MAX_USAGE_DAYS = 366
WARN_AT = 0.8
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class ProviderCall(Base):
    """One attempt at a provider call: who asked, how it went, what the vendor said and what it cost."""

    __tablename__ = "provider_calls"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    day: Mapped[str] = mapped_column(String(10), index=True)  # the UTC date, YYYY-MM-DD: what budgets and /usage use
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))  # image or text
    route: Mapped[str | None] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(20))  # ok, failed (answered with an error), no_answer
    status: Mapped[int | None] = mapped_column(Integer)  # the HTTP status, when there was one
    latency_ms: Mapped[float] = mapped_column(Float)
    credits: Mapped[float | None] = mapped_column(Float)  # vendor credits this attempt consumed
    remaining_credits: Mapped[int | None] = mapped_column(Integer)  # Clipdrop's x-remaining-credits
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)


@dataclass(frozen=True)
class Prices:
    """What the vendors charge, in USD: the PRICE_* settings, whose defaults (config.py) are the vendors' prices."""

    clipdrop_credit_usd: float
    stability_credit_usd: float
    openai_input_per_mtok_usd: float
    openai_output_per_mtok_usd: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Prices:
        return cls(settings.price_clipdrop_credit_usd, settings.price_stability_credit_usd,
                   settings.price_openai_input_per_mtok_usd, settings.price_openai_output_per_mtok_usd)


def utc_now() -> datetime:
    """Now, in UTC (tests freeze it with time-machine)."""
    return datetime.now(UTC)


class Ledger:
    """Writes the rows, each in a short transaction of its own, and reads the sums back."""

    def __init__(self, engine: Engine, settings: Settings, state: SharedState | None = None,
                 cost_counter=None) -> None:
        self.engine = engine
        self.settings = settings
        self.prices = Prices.from_settings(settings)
        self.state = state
        self.cost_counter = cost_counter  # Prometheus provider_cost_usd_total{provider}

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

    def figures(self, provider: str, status: int | None, headers: Mapping[str, str] | None,
                usage: Mapping[str, object] | None) -> dict:
        """The vendor's figures for one attempt and its cost from the price table."""
        headers = headers or {}
        if provider == "clipdrop":
            credits = _number(headers.get("x-credits-consumed"))
            if credits is None:
                credits = 1.0 if status == 200 else 0.0  # its documented price: 1 credit per successful call
            remaining = _number(headers.get("x-remaining-credits"))
            remaining = 0 if remaining is None and status == 402 else remaining
            if remaining is not None:
                self.note_credits(provider, int(remaining))
            return {"credits": credits, "remaining_credits": None if remaining is None else int(remaining),
                    "cost_usd": credits * self.prices.clipdrop_credit_usd}
        if provider == "stability":
            credits = STABILITY_CREDITS.get(self.settings.stability_engine, 0.0) if status == 200 else 0.0
            return {"credits": credits, "cost_usd": credits * self.prices.stability_credit_usd}
        if provider == "openai":
            usage = usage or {}
            tokens_in = int(_number(usage.get("prompt_tokens")) or 0)
            tokens_out = int(_number(usage.get("completion_tokens")) or 0)
            return {"input_tokens": tokens_in, "output_tokens": tokens_out,
                    "cost_usd": (tokens_in * self.prices.openai_input_per_mtok_usd
                                 + tokens_out * self.prices.openai_output_per_mtok_usd) / 1e6}
        return {"cost_usd": 0.0}

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

    def usage(self, start: date, end: date, group_by: str) -> dict:
        """The calls from `start` (inclusive) to `end` (exclusive), grouped, with their total."""
        key = {"provider": ProviderCall.provider, "day": ProviderCall.day, "route": ProviderCall.route}[group_by]
        ok = ProviderCall.outcome == OK
        query = (
            select(key, func.count(), func.sum(case((ok, 1), else_=0)),
                   func.sum(case((ok & (ProviderCall.kind == "image"), 1), else_=0)),
                   func.sum(func.coalesce(ProviderCall.input_tokens, 0)),
                   func.sum(func.coalesce(ProviderCall.output_tokens, 0)),
                   func.sum(func.coalesce(ProviderCall.credits, 0.0)), func.sum(ProviderCall.cost_usd))
            .where(ProviderCall.day >= start.isoformat(), ProviderCall.day < end.isoformat())
            .group_by(key).order_by(key)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        groups = [_group(row[0], *row[1:]) for row in rows]
        total = _group(None, *(sum(group[name] for group in groups) for name in SUMS))
        del total["key"]
        return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by, "groups": groups,
                "total": total}


SUMS = ("calls", "ok", "images", "input_tokens", "output_tokens", "credits", "cost_usd")


def _group(key, calls, ok, images, input_tokens, output_tokens, credits, cost_usd) -> dict:
    return {"key": key, "calls": int(calls), "ok": int(ok), "failed": int(calls) - int(ok), "images": int(images),
            "input_tokens": int(input_tokens), "output_tokens": int(output_tokens),
            "credits": round(float(credits), 3), "cost_usd": round(float(cost_usd), 6)}


def _number(value: object) -> float | None:
    try:
        number = float(str(value).strip()) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


# --- recording attempts ---------------------------------------------------------------------------


@dataclass
class _Call:
    """The provider call under way in this thread, and how many attempts it has recorded."""

    ledger: Ledger
    kind: str
    provider: str
    model: str
    attempts: int = field(default=0)


_current: ContextVar[_Call | None] = ContextVar("spend_call", default=None)


@contextmanager
def calls(ledger: Ledger | None, kind: str, provider: ModuleType) -> Iterator[None]:
    """Record the attempts of one provider call; a call that made none (a local provider) gets one row, cost 0."""
    if ledger is None:
        yield
        return
    call = _Call(ledger, kind, provider.NAME, getattr(provider, "MODEL", provider.NAME))
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
    try:
        figures = call.ledger.figures(call.provider, status, headers, usage)
    except Exception:
        log.exception("could not read the figures of a %s answer", call.provider)
        figures = {}
    call.ledger.record(provider=call.provider, model=model or call.model, kind=call.kind, outcome=outcome,
                       status=status, latency_ms=seconds * 1000, **figures)


class RecordingTransport(httpx2.BaseTransport):
    """An httpx2 transport for the OpenAI SDK that records each attempt, with the reply's `usage` tokens."""

    def __init__(self, model: str, inner: httpx2.BaseTransport | None = None) -> None:
        self.model = model
        self.inner = inner or httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
        except Exception:
            record_attempt(seconds=time.perf_counter() - started, model=self.model)
            raise
        usage = None
        if response.status_code == 200:
            response.read()  # a chat completion is one small JSON body; the SDK reads it again from memory
            try:
                usage = json.loads(response.content).get("usage")
            except (ValueError, AttributeError):
                usage = None
        record_attempt(seconds=time.perf_counter() - started, status=response.status_code,
                       headers=response.headers, usage=usage if isinstance(usage, dict) else None, model=self.model)
        return response

    def close(self) -> None:
        self.inner.close()


# --- the budget -----------------------------------------------------------------------------------


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


# --- /usage and the CLI ---------------------------------------------------------------------------


def parse_usage_day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    if not _ISO_DAY.fullmatch(value):
        raise InvalidParameter(name, f"'{name}' must be a date written YYYY-MM-DD.")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidParameter(name, f"'{name}' is not a calendar date.") from None


@bp.get("/usage")
def usage():
    """Provider calls and their cost between two UTC days, grouped by provider, day or route."""

    require_admin()
    group_by = request.args.get("group_by") or "provider"
    if group_by not in GROUPS:
        raise InvalidParameter("group_by", f"'group_by' must be one of: {', '.join(GROUPS)}.")
    start = parse_usage_day(request.args.get("from"), "from") or utc_now().date()
    end = parse_usage_day(request.args.get("to"), "to")
    if end is None:
        if start == date.max:
            raise InvalidParameter("from", "'from' must be before 9999-12-31.")
        end = start + timedelta(days=1)
    if end <= start:
        raise InvalidParameter("to", "'to' must be a later day than 'from'.")
    if (end - start).days > MAX_USAGE_DAYS:
        raise InvalidParameter("to", f"At most {MAX_USAGE_DAYS} days at once.")
    return jsonify(current_app.extensions["ledger"].usage(start, end, group_by))


@click.command("usage")
@with_appcontext
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, MAX_USAGE_DAYS),
              help="How many UTC days, today included.")
@click.option("--group-by", "group_by", default="provider", show_default=True, type=click.Choice(GROUPS))
def usage_command(days: int, group_by: str) -> None:
    """Print provider calls and their cost over the last days, as GET /usage answers them."""
    today = utc_now().date()
    report = current_app.extensions["ledger"].usage(today - timedelta(days=days - 1), today + timedelta(days=1),
                                                    group_by)
    columns = ("calls", "ok", "failed", "images", "input_tokens", "output_tokens", "credits", "cost_usd")
    rows = [[str(group["key"]), *(str(group[name]) for name in columns)] for group in report["groups"]]
    rows.append(["TOTAL", *(str(report["total"][name]) for name in columns)])
    header = [group_by, *columns]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    click.echo(f"{report['from']} to {report['to']} (UTC, end excluded)")
    for line in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                             for i, (cell, width) in enumerate(zip(line, widths, strict=True))))


def init_app(app, engine: Engine, settings: Settings, state: SharedState, metrics) -> Ledger:
    """The ledger of this app, its /usage route, CLI and metrics."""
    prom = metrics.prom
    cost = prom.Counter("provider_cost_usd", "Cost of provider calls in USD, from the price table.", ["provider"],
                        registry=metrics.registry)
    remaining = prom.Gauge("budget_remaining_usd", "What is left of today's generation budget (UTC), in USD.",
                           multiprocess_mode="mostrecent", registry=metrics.registry)
    ledger = Ledger(engine, settings, state, cost)

    def refresh() -> None:  # read at each scrape from the shared store, so every worker reports the same
        left = budget_remaining(app)
        if left is not None:
            remaining.set(left)
        credits = ledger.credits("clipdrop")
        if credits is not None:
            metrics.credits.labels("clipdrop").set(credits)

    metrics.refreshers.append(refresh)
    app.extensions["ledger"] = ledger
    app.register_blueprint(bp)
    app.cli.add_command(usage_command)
    return ledger
