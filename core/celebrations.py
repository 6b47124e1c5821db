"""The celebration calendar both text providers use: the real celebration on or nearest a day, from the public
holidays of ten markets (the `holidays` package) and the widely shopped observances they lack."""

from __future__ import annotations

import bisect
import datetime
import re
import warnings
from functools import lru_cache
from typing import NamedTuple

import holidays
from dateutil.easter import easter

# Market order breaks same-day ties between differently named public holidays.
MARKETS = ("US", "GB", "CN", "JP", "KR", "IN", "DE", "FR", "BR", "SG")
DEMONYMS = {
    "GB": "British",
    "CN": "Chinese",
    "JP": "Japanese",
    "KR": "Korean",
    "IN": "Indian",
    "DE": "German",
    "FR": "French",
    "BR": "Brazilian",
    "SG": "Singapore",
}
# Days off in lieu, bridge days, election days, state funerals and the later days of multi-day festivals are not
# celebrations in their own right; neither are one-off anniversaries with sentence-long names (see MAX_OCCASION).
NOISE = re.compile(
    r"observed|day off|substitute|alternative|temporary|extended|preceding|second day|election|polling|"
    r"funeral|armed forces|^national holiday$",
    re.IGNORECASE,
)
RENAMES = {
    "Christmas Day": "Christmas",
    "Chinese New Year": "Lunar New Year",
    "Korean New Year": "Lunar New Year",
    "Chinese New Year's Eve": "Lunar New Year's Eve",
    "Universal Fraternization Day": "New Year's Day",
    "Thanksgiving Day": "Thanksgiving",
    "Juneteenth National Independence Day": "Juneteenth",
    "Washington's Birthday": "Presidents' Day",
    "Worker's Day": "May Day",
    "Buddha Purnima": "Vesak Day",
    "National Day of Zumbi and Black Awareness": "Black Awareness Day",
}
LOCAL_RENAMES = {("FR", "National Day"): "Bastille Day"}
# Names several countries use for different days; outside the US they get the country's name in front.
GENERIC = set(
    "Independence Day|National Day|Republic Day|Constitution Day|Memorial Day|Children's Day|Liberation Day|"
    "Foundation Day|Victory Day".split("|")
)
MAJOR = set(
    "Christmas|New Year's Day|Lunar New Year|Lunar New Year's Eve|Good Friday|Easter Monday|Thanksgiving|Boxing Day|"
    "Independence Day|Diwali|Holi|Eid al-Fitr|Eid al-Adha|Mid-Autumn Festival|Chuseok|May Day".split("|")
)
# A minor public holiday must be this many days closer than a major celebration to be chosen over it.
MINOR_PENALTY = 2
SEARCH_DAYS = 60
MAX_OCCASION = 40

class Celebration(NamedTuple):
    ordinal: int
    name: str
    major: bool
    order: int  # 0 for shopping observances, then the market's place in MARKETS


def nearest_celebration(day: datetime.date) -> tuple[datetime.date, str]:
    """The celebration on or nearest `day`: on-the-day first, then major ones, then the closest; ties go forward."""
    celebrations, ordinals = _window(day.year)
    target = day.toordinal()
    lo = bisect.bisect_left(ordinals, target - SEARCH_DAYS)
    hi = bisect.bisect_right(ordinals, target + SEARCH_DAYS)
    best = min(celebrations[lo:hi] or celebrations, key=lambda c: _rank(c, target))
    return datetime.date.fromordinal(best.ordinal), best.name


def _rank(celebration: Celebration, target: int) -> tuple[int, bool, bool, int]:
    distance = abs(celebration.ordinal - target)
    if distance and not celebration.major:
        distance += MINOR_PENALTY
    return distance, not celebration.major, celebration.ordinal < target, celebration.order


@lru_cache(maxsize=32)
def _window(year: int) -> tuple[tuple[Celebration, ...], list[int]]:
    """Celebrations of the year and both neighbours, so early January sees last December and vice versa."""
    celebrations = tuple(sorted(c for y in (year - 1, year, year + 1) if 1 <= y <= 9999 for c in _calendar(y)))
    return celebrations, [c.ordinal for c in celebrations]


@lru_cache(maxsize=32)
def _calendar(year: int) -> tuple[Celebration, ...]:
    entries = [(day, name, 0) for day, name in _observances(year)]
    for order, code in enumerate(MARKETS, start=1):
        with warnings.catch_warnings():  # Some markets warn outside the years they cover; the others still count.
            warnings.simplefilter("ignore")
            calendar = holidays.country_holidays(code, years=year, language="en_US")
        for day, names in calendar.items():
            entries += [(day, name, order) for raw in names.split("; ") if (name := _clean(code, raw))]
    unique: dict[tuple[int, str], Celebration] = {}
    for day, name, order in entries:
        key = (day.toordinal(), name)
        unique.setdefault(key, Celebration(key[0], name, order == 0 or name in MAJOR, order))
    return tuple(unique.values())


def _observances(year: int) -> list[tuple[datetime.date, str]]:
    """Widely shopped days that are not public holidays in the markets above."""
    def nth_weekday(month: int, weekday: int, n: int) -> datetime.date:
        first = datetime.date(year, month, 1)
        return first + datetime.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))

    thanksgiving = nth_weekday(11, 3, 4)
    return [
        (datetime.date(year, 2, 14), "Valentine's Day"),
        (datetime.date(year, 3, 17), "St. Patrick's Day"),
        (easter(year), "Easter Sunday"),
        (nth_weekday(5, 6, 2), "Mother's Day"),
        (nth_weekday(6, 6, 3), "Father's Day"),
        (datetime.date(year, 10, 31), "Halloween"),
        (datetime.date(year, 11, 11), "Singles' Day"),
        (thanksgiving + datetime.timedelta(days=1), "Black Friday"),
        (thanksgiving + datetime.timedelta(days=4), "Cyber Monday"),
        (datetime.date(year, 12, 24), "Christmas Eve"),
        (datetime.date(year, 12, 31), "New Year's Eve"),
    ]


def _clean(code: str, raw: str) -> str | None:
    if NOISE.search(raw):
        return None
    name = re.sub(r"\s*\([^)]*\)", "", raw).strip()
    name = RENAMES.get(name, name)
    if code != "US":
        name = LOCAL_RENAMES.get((code, name), "May Day" if name == "Labor Day" else name)
        if name in GENERIC:
            name = f"{DEMONYMS[code]} {name}"
    return name if 0 < len(name) <= MAX_OCCASION else None
