"""Request parameters: where a route reads them (query string, JSON body, admin token), and the parsers that turn
raw query or JSON values into clean ones, or raise a 400."""

from __future__ import annotations

import calendar
import hmac
import json
import re
from datetime import date

from flask import current_app, g, request

from core.errors import ApiError, InvalidParameter, MissingParameter

MAX_ID = 2**63 - 1
MAX_PRODUCT_LENGTH = 100
MAX_SEED_COUNT = 10_000
SEED_COUNT_KEYS = ("users", "achievements", "storefronts")
# Days the service can celebrate: a year of 0001 or 9999 is a typo, and the celebrations calendar ends anyway.
MIN_YEAR, MAX_YEAR = 1900, 2200
# Real bodies nest a few levels (a credential about eight): deeper is an attack on the parser, or on what reads it.
MAX_JSON_DEPTH = 32
FLAGS = {"true": True, "1": True, "false": False, "0": False}

# Unicode's control characters (C0, DEL, C1): NUL breaks PostgreSQL text, the others have no place in a parameter.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DIGITS = re.compile(r"[0-9]+")
_ISO_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_ORDINAL = r"(?P<day>[0-9]{1,2})(?P<suffix>st|nd|rd|th)?"
_MONTH = r"(?P<month>[a-z]+)\.?"
_YEAR = r"(?:,? +(?P<year>[0-9]{4}))?"
_DAY_FIRST = re.compile(rf"{_ORDINAL} +(?:of +)?{_MONTH}{_YEAR}")
_MONTH_FIRST = re.compile(rf"{_MONTH} +{_ORDINAL}{_YEAR}")
_MONTHS = {
    name: number
    for number, names in enumerate(
        [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",),
         ("june", "jun"), ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"),
         ("october", "oct"), ("november", "nov"), ("december", "dec")],
        start=1,
    )
    for name in names
}


class NestedTooDeep(ApiError, ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH (a ValueError too: to a parser, it is JSON it does not take)."""

    code = "invalid_json"

    def __init__(self) -> None:
        super().__init__(f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels.")


def check_text(value: str, field: str) -> str:
    """`value`, unless it holds a control character (NUL, DEL, a line break...): then a 400 naming `field`."""
    if CONTROL_CHARACTER.search(value):
        raise InvalidParameter(field, f"'{field}' must not contain control characters (such as NUL or a line "
                                      "break).")
    return value


def load_json(raw: str | bytes) -> object:
    """JSON text parsed, nested at most MAX_JSON_DEPTH levels (NestedTooDeep); ValueError for text that is no JSON."""
    try:
        value = json.loads(raw)
    except RecursionError:  # the decoder's own bound, about 1,000 levels
        raise NestedTooDeep() from None
    depth, layer = 0, [value]
    while containers := [item for item in layer if isinstance(item, dict | list)]:  # level by level, no recursion
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise NestedTooDeep()
        layer = [child for container in containers
                 for child in (container.values() if isinstance(container, dict) else container)]
    return value


def is_missing(value: object) -> bool:
    """Absent, JSON null, or an empty string."""
    return value is None or (isinstance(value, str) and value == "")


def parse_int(value: object, field: str, minimum: int = 1, maximum: int = MAX_ID) -> int:
    """A whole number written in ASCII digits (leading zeros allowed) or a JSON integer, within bounds."""
    if is_missing(value):
        raise MissingParameter(field)
    out_of_range = InvalidParameter(field, f"'{field}' must be between {minimum} and {maximum}.")
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        digits = value.lstrip("0") or "0"
        # Longer than the bound is out of range, and int() refuses strings past 4,300 digits (a 500 otherwise).
        if len(digits) > len(str(maximum)):
            raise out_of_range
        number = int(digits)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise InvalidParameter(field, f"'{field}' must be a whole number written in digits.")
    if not minimum <= number <= maximum:
        raise out_of_range
    return number


def parse_id(value: object, field: str) -> int:
    """A positive id, 1 to 2^63-1."""
    return parse_int(value, field)


def parse_text(value: object, field: str, max_length: int = MAX_PRODUCT_LENGTH) -> str:
    """A required string, trimmed; blanks only count as missing."""
    if isinstance(value, str):
        value = value.strip()
    if is_missing(value):
        raise MissingParameter(field)
    if not isinstance(value, str):
        raise InvalidParameter(field, f"'{field}' must be a string.")
    if len(value) > max_length:
        raise InvalidParameter(field, f"'{field}' must be at most {max_length} characters.")
    return value


def parse_flag(value: object, field: str) -> bool:
    """An optional yes/no: absent is no; `true`/`false`, `1`/`0` (any case) or a JSON boolean."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in FLAGS:
        return FLAGS[value.lower()]
    raise InvalidParameter(field, f"'{field}' must be true or false.")


def asks_fresh() -> bool:
    """Whether the request asks for a new picture rather than a cached one: `fresh=true`, or the request's
    `Cache-Control: no-cache` (RFC 9111: the client wants no stored response reused)."""
    fresh = parse_flag(param("fresh"), "fresh")
    return fresh or bool(request.cache_control.no_cache)


def parse_day(value: object, field: str, today: date) -> date:
    """A day such as `2024-10-05`, `05 Oct`, `5th of October` or `October 5th 2024`, from 1900 to 2200.

    Without a year the day is its next occurrence, `today` included.
    """
    if is_missing(value):
        raise MissingParameter(field)
    invalid = InvalidParameter(
        field, f"'{field}' must be a day such as '2024-10-05', '05 Oct', '5th of October' or 'October 5'."
    )
    if not isinstance(value, str):
        raise invalid
    text = value.strip()
    if iso := _ISO_DAY.fullmatch(text):
        return _existing_day(field, int(iso[1]), int(iso[2]), int(iso[3]))
    match = _DAY_FIRST.fullmatch(text.lower()) or _MONTH_FIRST.fullmatch(text.lower())
    if not match or match["month"] not in _MONTHS:
        raise invalid
    day, month = int(match["day"]), _MONTHS[match["month"]]
    if match["suffix"] and match["suffix"] != _ordinal_suffix(day):
        raise invalid
    if match["year"]:
        return _existing_day(field, int(match["year"]), month, day)
    _existing_day(field, None, month, day)
    for year in range(today.year, min(today.year + 9, MAX_YEAR + 1)):
        try:
            candidate = date(year, month, day)
        except ValueError:  # 29 February outside a leap year
            continue
        if candidate >= today:
            return candidate
    raise InvalidParameter(field, f"'{field}': the next such day is after {MAX_YEAR}.")


def _existing_day(field: str, year: int | None, month: int, day: int) -> date:
    """The day (in 2000, a leap year, when `year` is None), or a 400 that says why there is none: a year out of
    range, no such month, or no such day in that month."""
    if year is not None and not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidParameter(field, f"'{field}' must be a day from {MIN_YEAR} to {MAX_YEAR}, not in year {year}.")
    if not 1 <= month <= 12:
        raise InvalidParameter(field, f"'{field}' names month {month}: there is no such day.")
    try:
        return date(2000 if year is None else year, month, day)
    except ValueError:
        month_name = calendar.month_name[month]
        days = calendar.monthrange(year or 2000, month)[1]
        raise InvalidParameter(field, f"'{field}' names a day that does not exist: {month_name}"
                                      f"{f' {year}' if year else ''} has days 1 to {days}, not {day}.") from None


def _ordinal_suffix(day: int) -> str:
    if 10 <= day % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def parse_id_list(value: object, field: str, from_query: bool) -> list[int]:
    """A JSON array of ids (JSON text in a query string, an array in a JSON body); repeats count once."""
    if is_missing(value):
        raise MissingParameter(field)
    invalid = InvalidParameter(field, f"'{field}' must be a JSON array of positive integers, such as [1,2,3].")
    if from_query:
        try:
            value = load_json(value)
        except ValueError:
            raise invalid from None
    if not isinstance(value, list):
        raise invalid
    if not all(isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= MAX_ID for item in value):
        raise invalid
    return sorted(set(value))


def parse_json_object(raw: bytes) -> dict[str, object]:
    """A request body that must be a JSON object; an empty body is an empty object."""
    if not raw.strip():
        return {}
    try:
        body = load_json(raw)
    except NestedTooDeep:
        raise
    except ValueError:
        raise ApiError("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.", code="invalid_json")
    return body


def parse_seed_counts(body: dict[str, object]) -> dict[str, int]:
    """The counts of `/seedrandom`: each a JSON integer from 0 to 10,000, 10 by default; no other keys."""
    for key in body:
        if key not in SEED_COUNT_KEYS:
            raise InvalidParameter(key, f"Unknown field '{key}'; expected only {', '.join(SEED_COUNT_KEYS)}.")
    counts = {}
    for key in SEED_COUNT_KEYS:
        value = body.get(key, 10)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED_COUNT:
            raise InvalidParameter(key, f"'{key}' must be a JSON integer from 0 to {MAX_SEED_COUNT}.")
        counts[key] = value
    return counts


def json_body() -> dict[str, object]:
    """The request's JSON object body, parsed once, without control characters in its top-level strings; an empty
    body is an empty object."""
    if "json_body" not in g:
        body = parse_json_object(request.get_data(cache=True))
        for key, value in body.items():
            check_text(key, repr(key)[1:-1])
            if isinstance(value, str):
                check_text(value, key)
        g.json_body = body
    return g.json_body


def param(name: str) -> object:
    """A parameter from the query string, else (on POST) from the JSON body; the query wins."""
    body = json_body() if request.method == "POST" else {}
    if name in request.args:
        return request.args[name]
    return body.get(name)


def require_admin() -> None:
    """When ADMIN_TOKEN is set, demand `Authorization: Bearer <token>` (compared in constant time)."""
    token = current_app.extensions["settings"].admin_token
    if not token:
        return
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(
            "This route needs 'Authorization: Bearer <admin token>'.",
            status=401, code="unauthorized", headers={"WWW-Authenticate": "Bearer"},
        )
