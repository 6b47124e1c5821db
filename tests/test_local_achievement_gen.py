"""The offline achievement writer: which celebration a day belongs to, and what it writes for a product."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

import local_achievement_gen as gen
from core.celebrations import nearest_celebration
from core.settings import Settings

SETTINGS = Settings()


def write(day: date, product: str):
    return gen.write_achievement(day, product, SETTINGS)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 10, 31), (date(2026, 10, 31), "Halloween")),
        (date(2025, 10, 31), (date(2025, 10, 31), "Halloween")),
        (date(2026, 10, 29), (date(2026, 10, 31), "Halloween")),
        (date(2026, 2, 14), (date(2026, 2, 14), "Valentine's Day")),
        (date(2026, 2, 12), (date(2026, 2, 14), "Valentine's Day")),
        (date(2026, 12, 24), (date(2026, 12, 24), "Christmas Eve")),
        (date(2026, 11, 11), (date(2026, 11, 11), "Singles' Day")),
        (date(2026, 11, 27), (date(2026, 11, 27), "Black Friday")),
        (date(2025, 11, 28), (date(2025, 11, 28), "Black Friday")),
        (date(2026, 11, 30), (date(2026, 11, 30), "Cyber Monday")),
        (date(2026, 11, 26), (date(2026, 11, 26), "Thanksgiving")),
        (date(2026, 5, 10), (date(2026, 5, 10), "Mother's Day")),
        (date(2026, 2, 17), (date(2026, 2, 17), "Lunar New Year")),
        (date(2026, 12, 31), (date(2026, 12, 31), "New Year's Eve")),
    ],
)
def test_known_dates(day, expected):
    assert nearest_celebration(day) == expected


@pytest.mark.parametrize("year", [2024, 2025, 2026, 2030])
def test_christmas_and_new_year(year):
    assert "Christmas" in nearest_celebration(date(year, 12, 25))[1]
    assert nearest_celebration(date(year, 1, 1)) == (date(year, 1, 1), "New Year's Day")


def test_year_boundaries():
    assert nearest_celebration(date(2026, 12, 30)) == (date(2026, 12, 31), "New Year's Eve")
    assert nearest_celebration(date(2027, 1, 2)) == (date(2027, 1, 1), "New Year's Day")
    assert nearest_celebration(date(2026, 1, 3)) == (date(2026, 1, 1), "New Year's Day")
    assert nearest_celebration(date(2025, 12, 29)) == (date(2025, 12, 31), "New Year's Eve")


def test_every_day_has_a_close_clean_celebration():
    day = date(2025, 12, 1)
    while day < date(2027, 2, 1):
        when, name = nearest_celebration(day)
        assert abs((when - day).days) <= 21, day
        assert name and "observed" not in name.lower() and "(" not in name, (day, name)
        day += timedelta(days=1)


def test_far_years_do_not_crash():
    for day in (date(1, 1, 1), date(1990, 6, 1), date(2100, 3, 3), date(9999, 12, 31)):
        when, name = nearest_celebration(day)
        assert name
        assert write(day, "tea").occasion == name


def test_draft_fields():
    draft = write(date(2026, 10, 31), "soju")
    assert draft.occasion == "Halloween"
    assert draft.product_type == "alcoholic beverage"
    assert "Soju" in draft.name
    assert all(word.startswith("S") for word in draft.name.split())  # alliteration
    words = draft.description.split()
    assert 40 <= len(words) <= 70
    assert "soju" in draft.description
    assert "Halloween" in draft.description
    assert "friend" in draft.description.lower()


@pytest.mark.parametrize("day", [date(2026, 1, 1) + timedelta(days=n) for n in range(0, 365, 11)])
@pytest.mark.parametrize("product", ["soju", "laptop", "high heels", "iPhone 15 Pro Max", "bottle of red wine"])
def test_drafts_across_the_year(day, product):
    draft = write(day, product)
    assert draft.name and draft.description and draft.occasion and draft.product_type
    assert 2 <= len(draft.name.split()) <= 4
    assert 40 <= len(draft.description.split()) <= 70
    assert product in draft.description
    assert "friend" in draft.description.lower()
    assert draft.occasion == nearest_celebration(day)[1]


@pytest.mark.parametrize(
    ("product", "kind"),
    [
        ("soju", "alcoholic beverage"),
        ("Laptop", "electronics"),
        ("high heels", "footwear"),
        ("wool scarves", "clothing"),
        ("Zorblax 3000", "zorblax 3000"),
    ],
)
def test_product_type(product, kind):
    assert write(date(2026, 3, 1), product).product_type == kind


def test_deterministic():
    day = date(2026, 7, 4)
    assert write(day, "sparkling water") == write(day, "sparkling water")


def test_different_products_give_different_names():
    names = {write(date(2026, 12, 25), product).name for product in ["soju", "laptop", "high heels", "candle", "tea"]}
    assert len(names) == 5


def test_different_dates_give_different_achievements():
    halloween = write(date(2026, 10, 31), "laptop")
    valentine = write(date(2026, 2, 14), "laptop")
    assert halloween.occasion != valentine.occasion
    assert halloween.name != valentine.name
    assert halloween.description != valentine.description


@pytest.mark.parametrize(
    "product",
    [
        "🎃",
        "👨\u200d👩\u200d👧",
        "소주",
        "مشروب",
        "Äpfel-Saft",
        "x" * 100,
        "a " + "very " * 18 + "long",
        "\u200b",
        "\u200d",
        "the",
        "TV",
        "<script>alert(1)</script>",
        "line\nbreak\ttab",
        "of",
    ],
)
def test_odd_products_do_not_crash(product):
    draft = write(date(2026, 10, 31), product)
    assert draft.name.strip() and draft.description and draft.product_type
    assert len(draft.name) <= 60
    assert 2 <= len(draft.name.split()) <= 4
    assert 40 <= len(draft.description.split()) <= 70
    assert "\n" not in draft.name and "\u200b" not in draft.name


def test_title_case_keeps_existing_capitals():
    assert "TV" in write(date(2026, 10, 31), "TV").name
    assert "High Heels" in write(date(2026, 10, 31), "high heels").name


def test_is_configured_and_name():
    assert gen.NAME == "local"
    assert gen.is_configured(SETTINGS) is True
