"""Properties of the parsers at the edge (ids, days, texts, id lists, JSON bodies, seed counts), for any input."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import ApiError, InvalidParameter, MissingParameter
from core.params import (
    MAX_ID,
    MAX_JSON_DEPTH,
    MAX_SEED_COUNT,
    MAX_YEAR,
    MIN_YEAR,
    NestedTooDeep,
    check_text,
    load_json,
    parse_day,
    parse_id,
    parse_id_list,
    parse_int,
    parse_json_object,
    parse_seed_counts,
    parse_text,
)

MONTH_NAMES = {
    1: ["january", "jan"], 2: ["february", "feb"], 3: ["march", "mar"], 4: ["april", "apr"], 5: ["may"],
    6: ["june", "jun"], 7: ["july", "jul"], 8: ["august", "aug"], 9: ["september", "sep", "sept"],
    10: ["october", "oct"], 11: ["november", "nov"], 12: ["december", "dec"],
}
SEED_KEYS = ("users", "achievements", "storefronts")
# Deadlines measure the machine, not the code; the properties are what these tests are about.
# The days the service takes.
days = st.dates(min_value=date(MIN_YEAR, 1, 1), max_value=date(MAX_YEAR, 12, 31))

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                           max_leaves=10)
not_an_id = (st.integers(max_value=0) | st.integers(min_value=MAX_ID + 1) | st.booleans() | st.floats()
             | st.text() | st.none() | st.lists(st.integers(), max_size=3))
digit_strings = st.text("0123456789", min_size=1, max_size=40) | st.builds(
    lambda digit, count: digit * count, st.sampled_from("0123456789"), st.integers(4000, 6000)
)


def ordinal(day: int) -> str:
    if day in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


@st.composite
def spelled_days(draw, with_year: bool) -> tuple[date, str]:
    """A day and one of the accepted ways to write it with a month name: `5th of October`, `OCT 05, 2024`..."""
    day = draw(days)
    month = draw(st.sampled_from(MONTH_NAMES[day.month]))
    month = draw(st.sampled_from([month, month.upper(), month.title()]))
    number = draw(st.sampled_from([str(day.day), f"{day.day:02d}"])) + draw(st.sampled_from(["", ordinal(day.day)]))
    space = draw(st.sampled_from([" ", "  "]))
    year = draw(st.sampled_from([f" {day.year}", f", {day.year}"])) if with_year else ""
    if draw(st.booleans()):
        of = draw(st.sampled_from(["", f"of{space}"]))
        text = f"{number}{space}{of}{month}{year}"
    else:
        text = f"{month}{space}{number}{year}"
    padding = draw(st.sampled_from(["", " "]))
    return day, padding + text + padding


# --- ids and whole numbers ------------------------------------------------------------------------


@given(st.integers(1, MAX_ID), st.integers(0, 30))
def test_id_digits_with_leading_zeros(number, zeros):
    assert parse_id("0" * zeros + str(number), "user_id") == number
    assert parse_id(number, "user_id") == number


@given(digit_strings)
@example("0")
@example("9223372036854775808")
@example("0" * 5000 + "1")
def test_any_digit_string_is_an_id_or_out_of_range(text):
    value = Decimal(text)  # no digit limit, unlike int()
    if 1 <= value <= MAX_ID:
        assert parse_id(text, "user_id") == int(value)
    else:
        with pytest.raises(InvalidParameter) as raised:
            parse_id(text, "user_id")
        assert raised.value.fields == {"field": "user_id"}


@given(st.text(min_size=1).filter(lambda text: not (text.isascii() and text.isdigit())))
@example("+1")
@example(" 1")
@example("1.5")
@example("-1")
@example("١٢")  # digits, but not ASCII ones
@example("1_000")
def test_anything_but_ascii_digits_is_invalid(text):
    with pytest.raises(InvalidParameter):
        parse_id(text, "user_id")


@given(st.booleans() | st.floats() | st.lists(st.integers()) | st.dictionaries(st.text(), st.integers()))
def test_json_values_other_than_integers_are_invalid(value):
    with pytest.raises(InvalidParameter):
        parse_id(value, "user_id")


@pytest.mark.parametrize("value", [None, ""])
def test_absent_or_empty_id_is_missing(value):
    with pytest.raises(MissingParameter):
        parse_id(value, "user_id")


@given(st.integers(), st.integers(0, 10**6), st.integers(0, 10**6))
def test_whole_numbers_within_bounds(number, minimum, span):
    maximum = minimum + span
    for value in (number, str(number)) if number >= 0 else (number,):
        if minimum <= number <= maximum:
            assert parse_int(value, "limit", minimum, maximum) == number
        else:
            with pytest.raises(InvalidParameter):
                parse_int(value, "limit", minimum, maximum)


# --- texts ----------------------------------------------------------------------------------------


@given(st.text(max_size=130))
def test_text_is_trimmed_then_1_to_100_characters(text):
    trimmed = text.strip()
    if not trimmed:
        with pytest.raises(MissingParameter):
            parse_text(text, "product")
    elif len(trimmed) > 100:
        with pytest.raises(InvalidParameter):
            parse_text(text, "product")
    else:
        assert parse_text(text, "product") == trimmed


@given(st.integers() | st.booleans() | st.lists(st.text()) | st.dictionaries(st.text(), st.text()))
def test_text_must_be_a_string(value):
    with pytest.raises(InvalidParameter):
        parse_text(value, "product")


# --- days -----------------------------------------------------------------------------------------


@given(days)
def test_iso_day_is_that_day(day):
    assert parse_day(day.isoformat(), "date", today=date(2026, 1, 1)) == day


@given(st.dates().filter(lambda day: not MIN_YEAR <= day.year <= MAX_YEAR), st.booleans())
@example(date(1, 1, 1), True)
@example(date(1899, 12, 31), False)
@example(date(2201, 1, 1), True)
def test_a_year_outside_1900_to_2200_is_refused_saying_so(day, iso):
    text = day.isoformat() if iso else f"{day.day} {day.strftime('%B')} {day.year:04d}"
    with pytest.raises(InvalidParameter) as raised:
        parse_day(text, "date", today=date(2026, 1, 1))
    assert raised.value.message == f"'date' must be a day from 1900 to 2200, not in year {day.year}."


@pytest.mark.parametrize(("text", "message"), [
    ("31 Feb", "February has days 1 to 29, not 31"),
    ("February 30th", "February has days 1 to 29, not 30"),
    ("31 Apr", "April has days 1 to 30, not 31"),
    ("0 Oct", "October has days 1 to 31, not 0"),
    ("2023-02-29", "February 2023 has days 1 to 28, not 29"),
    ("29 Feb 2023", "February 2023 has days 1 to 28, not 29"),
    ("2024-06-31", "June 2024 has days 1 to 30, not 31"),
])
def test_a_day_that_does_not_exist_says_so(text, message):
    with pytest.raises(InvalidParameter) as raised:
        parse_day(text, "date", today=date(2026, 1, 1))
    assert raised.value.message == f"'date' names a day that does not exist: {message}."
    assert raised.value.fields == {"field": "date"}


@given(spelled_days(with_year=True), st.dates())
def test_spelled_day_with_year_is_that_day(spelled, today):
    day, text = spelled
    assert parse_day(text, "date", today=today) == day


@given(spelled_days(with_year=False), st.dates(min_value=date(2000, 1, 1), max_value=date(2190, 12, 31)))
@example((date(2024, 2, 29), "29 Feb"), date(2025, 3, 1))
@example((date(2024, 10, 5), "5th of October"), date(2026, 10, 5))
def test_spelled_day_without_year_is_its_next_occurrence(spelled, today):
    day, text = spelled
    found = parse_day(text, "date", today=today)
    assert (found.month, found.day) == (day.month, day.day)
    assert found >= today
    for year in range(today.year, found.year):  # no earlier occurrence from today on
        try:
            assert date(year, day.month, day.day) < today
        except ValueError:  # 29 February outside a leap year
            pass


@given(days, st.sampled_from(["%d/%m", "%Y%m%d", "%Y/%m/%d", "%d.%m.%Y", "%m-%d",
                                                               "%d-%m-%Y", "%Y-%m-%dT00:00", "%Y-%m"]))
def test_other_numeric_forms_are_invalid(day, form):
    with pytest.raises(InvalidParameter):
        parse_day(day.strftime(form), "date", today=date(2026, 1, 1))


@given(st.integers(1, 28), st.sampled_from(["st", "nd", "rd", "th"]), st.sampled_from(MONTH_NAMES[10]))
def test_ordinal_suffix_must_fit_the_day(number, suffix, month):
    text = f"{number}{suffix} {month}"
    if suffix == ordinal(number):
        assert parse_day(text, "date", today=date(2026, 1, 1)).day == number
    else:
        with pytest.raises(InvalidParameter):
            parse_day(text, "date", today=date(2026, 1, 1))


@given(st.text() | st.text(" ,.-/:0123456789abcdefghijlmnoprstuvyOSJ\t", max_size=25), st.dates())
@example("5\tOct", date(2026, 1, 1))
@example("31 Feb", date(2026, 1, 1))
@example("0 Oct", date(2026, 1, 1))
@example("2024-13-01", date(2026, 1, 1))
@example("0000-01-01", date(2026, 1, 1))
@example("1 Jan", date(9999, 12, 31))
def test_any_text_is_a_day_or_a_400(text, today):
    try:
        found = parse_day(text, "date", today=today)
    except (InvalidParameter, MissingParameter):
        return
    assert isinstance(found, date)


@given(json_values.filter(lambda value: not isinstance(value, str) and value is not None))
def test_day_must_be_a_string(value):
    with pytest.raises(InvalidParameter):
        parse_day(value, "date", today=date(2026, 1, 1))


# --- achievement_list -----------------------------------------------------------------------------


@given(st.lists(st.integers(1, MAX_ID)))
def test_id_list_is_sorted_and_each_once(ids):
    assert parse_id_list(json.dumps(ids), "achievement_list", from_query=True) == sorted(set(ids))
    assert parse_id_list(ids, "achievement_list", from_query=False) == sorted(set(ids))


@given(st.lists(st.integers(1, MAX_ID)), not_an_id, st.integers(0, 5))
def test_one_bad_item_spoils_the_list(ids, bad, position):
    items = [*ids[:position], bad, *ids[position:]]
    with pytest.raises(InvalidParameter):
        parse_id_list(json.dumps(items), "achievement_list", from_query=True)
    with pytest.raises(InvalidParameter):
        parse_id_list(items, "achievement_list", from_query=False)


@given(json_values.filter(lambda value: not isinstance(value, list) and value not in (None, "")))
def test_id_list_must_be_an_array(value):
    with pytest.raises(InvalidParameter):
        parse_id_list(json.dumps(value), "achievement_list", from_query=True)
    with pytest.raises(InvalidParameter):
        parse_id_list(value, "achievement_list", from_query=False)


@given(st.lists(st.integers(1, 100)))
def test_id_list_as_a_string_in_a_body_is_invalid(ids):
    with pytest.raises(InvalidParameter):
        parse_id_list(json.dumps(ids), "achievement_list", from_query=False)


@given(st.text())
@example("[" * 100_000)
@example("[" + "1" * 5000 + "]")
@example("[1e400]")
@example("[NaN]")
def test_any_query_text_is_a_list_of_ids_or_a_400(text):
    try:
        ids = parse_id_list(text, "achievement_list", from_query=True)
    except (InvalidParameter, MissingParameter):
        return
    assert all(isinstance(i, int) and 1 <= i <= MAX_ID for i in ids)
    assert ids == sorted(set(ids))


# --- JSON bodies and /seedrandom ------------------------------------------------------------------


@given(st.dictionaries(st.text(), json_values))
def test_json_object_body_round_trips(body):
    assert parse_json_object(json.dumps(body).encode()) == body


@given(json_values.filter(lambda value: not isinstance(value, dict)))
def test_json_body_must_be_an_object(value):
    with pytest.raises(ApiError) as raised:
        parse_json_object(json.dumps(value).encode())
    assert raised.value.code == "invalid_json"


@given(st.binary())
@example(b"\xff\xfe\x00")
@example(b"{" * 100_000)
@example(b'{"users": ' + b"1" * 5000 + b"}")
@example(b"  \n\t")
def test_any_body_bytes_are_an_object_or_invalid_json(raw):
    try:
        body = parse_json_object(raw)
    except ApiError as error:
        assert error.code == "invalid_json"
        return
    assert isinstance(body, dict)


@given(st.fixed_dictionaries({}, optional={key: st.integers(0, MAX_SEED_COUNT) for key in SEED_KEYS}))
def test_seed_counts_default_to_10(body):
    counts = parse_seed_counts(parse_json_object(json.dumps(body).encode()))
    assert counts == {key: body.get(key, 10) for key in SEED_KEYS}


@given(st.sampled_from(SEED_KEYS),
       st.integers(max_value=-1) | st.integers(min_value=MAX_SEED_COUNT + 1) | st.booleans() | st.none()
       | st.floats() | st.text() | st.lists(st.integers(), max_size=2))
@example("users", 10.0)
@example("storefronts", "10")
def test_seed_count_must_be_a_json_integer_from_0_to_10000(key, value):
    raw = json.dumps({key: value}).encode()
    with pytest.raises(InvalidParameter) as raised:
        parse_seed_counts(parse_json_object(raw))
    assert raised.value.fields["field"] == key


@given(st.text().filter(lambda key: key not in SEED_KEYS), json_values)
def test_unknown_seed_key_is_named(key, value):
    with pytest.raises(InvalidParameter) as raised:
        parse_seed_counts({"users": 1, key: value})
    assert raised.value.fields["field"] == key


# --- what the properties above found, kept as a case at the HTTP level -----------------------------


def test_id_of_thousands_of_digits_is_400_not_500(client, users):
    response = client.get("/get-recommendations", query_string={"user_id": "1" * 5000})
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_parameter"
    assert response.get_json()["field"] == "user_id"
    offset = client.get("/view-all-achievement", query_string={"offset": "9" * 5000})
    assert offset.status_code == 400
    assert offset.get_json()["field"] == "offset"
    padded = client.get("/get-recommendations", query_string={"user_id": "0" * 5000 + str(users[0]["id"])})
    assert padded.status_code == 200
    assert set(padded.get_json()["recommendations"]) == {"tech", "food", "fashion"}


# --- control characters and nesting ---------------------------------------------------------------


@given(st.text(), st.characters(categories=["Cc"]), st.text())
def test_text_with_any_control_character_is_refused_naming_the_field(before, control, after):
    with pytest.raises(InvalidParameter) as raised:
        check_text(before + control + after, "product")
    assert raised.value.fields == {"field": "product"}


@given(st.text(st.characters(exclude_categories=["Cc"])))
def test_text_without_control_characters_is_kept(text):
    assert check_text(text, "product") == text


@given(st.integers(1, 60), st.sampled_from(["[", '{"a":']))
def test_json_is_read_to_32_levels_and_no_deeper(depth, opener):
    closer = "]" if opener == "[" else "}"
    text = opener * depth + "1" + closer * depth
    if depth <= MAX_JSON_DEPTH:
        assert load_json(text) is not None
    else:
        with pytest.raises(NestedTooDeep):
            load_json(text)
