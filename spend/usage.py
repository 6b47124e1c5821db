"""`GET /usage` and `flask usage`: the ledger's provider calls and their cost between two UTC days, grouped."""

from __future__ import annotations

import re
from datetime import date, timedelta

import click
from flask import Blueprint, current_app, jsonify, request
from flask.cli import with_appcontext
from sqlalchemy import Engine, case, func, select

from core.errors import InvalidParameter
from core.ledger import CACHED, OK, utc_now
from core.params import require_admin
from models import ProviderCall

bp = Blueprint("spend", __name__)

GROUPS = ("provider", "day", "route")
MAX_USAGE_DAYS = 366
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
SUMS = ("calls", "cached", "ok", "images", "input_tokens", "output_tokens", "credits", "cost_usd")


def usage_report(engine: Engine, start: date, end: date, group_by: str) -> dict:
    """The calls from `start` (inclusive) to `end` (exclusive), grouped, with their total; pictures reused from
    the image cache are counted apart (`cached`), never as calls."""
    key = {"provider": ProviderCall.provider, "day": ProviderCall.day, "route": ProviderCall.route}[group_by]
    ok = ProviderCall.outcome == OK
    cached = ProviderCall.outcome == CACHED
    query = (
        select(key, func.sum(case((cached, 0), else_=1)), func.sum(case((cached, 1), else_=0)),
               func.sum(case((ok, 1), else_=0)),
               func.sum(case((ok & (ProviderCall.kind == "image"), 1), else_=0)),
               func.sum(func.coalesce(ProviderCall.input_tokens, 0)),
               func.sum(func.coalesce(ProviderCall.output_tokens, 0)),
               func.sum(func.coalesce(ProviderCall.credits, 0.0)), func.sum(ProviderCall.cost_usd))
        .where(ProviderCall.day >= start.isoformat(), ProviderCall.day < end.isoformat())
        .group_by(key).order_by(key)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    groups = [_group(row[0], *row[1:]) for row in rows]
    total = _group(None, *(sum(group[name] for group in groups) for name in SUMS))
    del total["key"]
    return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by, "groups": groups,
            "total": total}


def _group(key, calls, cached, ok, images, input_tokens, output_tokens, credits, cost_usd) -> dict:
    return {"key": key, "calls": int(calls), "cached": int(cached), "ok": int(ok), "failed": int(calls) - int(ok),
            "images": int(images),
            "input_tokens": int(input_tokens), "output_tokens": int(output_tokens),
            "credits": round(float(credits), 3), "cost_usd": round(float(cost_usd), 6)}


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
    group_by = request.args.get("group_by", "provider")
    if group_by not in GROUPS:  # an empty one too, as `from=` and `to=`
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
    return jsonify(usage_report(current_app.extensions["engine"], start, end, group_by))


@click.command("usage")
@with_appcontext
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, MAX_USAGE_DAYS),
              help="How many UTC days, today included.")
@click.option("--group-by", "group_by", default="provider", show_default=True, type=click.Choice(GROUPS))
def usage_command(days: int, group_by: str) -> None:
    """Print provider calls and their cost over the last days, as GET /usage answers them."""
    today = utc_now().date()
    report = usage_report(current_app.extensions["engine"], today - timedelta(days=days - 1),
                          today + timedelta(days=1), group_by)
    columns = ("calls", "cached", "ok", "failed", "images", "input_tokens", "output_tokens", "credits", "cost_usd")
    rows = [[str(group["key"]), *(str(group[name]) for name in columns)] for group in report["groups"]]
    rows.append(["TOTAL", *(str(report["total"][name]) for name in columns)])
    header = [group_by, *columns]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    click.echo(f"{report['from']} to {report['to']} (UTC, end excluded)")
    for line in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                             for i, (cell, width) in enumerate(zip(line, widths, strict=True))))
