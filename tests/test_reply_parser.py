"""Properties of the LLM reply parser: any well-formed achievement survives any wrapping; nothing else crashes it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from achievement_gen import FIELDS, UnusableReply, parse_draft

# Printable words, so the expected value after whitespace folding is easy to state.
words = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12)
field_text = st.lists(words, min_size=1, max_size=6).map(" ".join)
drafts = st.fixed_dictionaries({field: field_text for field in FIELDS})
KEY_SPELLINGS = {
    "name": ["name", "Name", "Name of the Achievement", "achievement_name", "TITLE"],
    "description": ["description", "Description", "desc"],
    "occasion": ["occasion", "Occasion", "celebration", "holiday"],
    "product_type": ["product_type", "productType", "Product Type", "category"],
}


def render(values: dict[str, str], keys: dict[str, str], style: str) -> str:
    data = {keys[field]: values[field] for field in FIELDS}
    if style == "python":
        return repr(data)
    text = json.dumps(data, ensure_ascii=False)
    if style == "fenced":
        return f"Here you go!\n```json\n{text}\n```\nEnjoy."
    if style == "prose":
        return f"Sure. {text} Hope it helps."
    if style == "wrapped":
        return json.dumps({"achievement": data}, ensure_ascii=False)
    return text


@given(drafts, st.sampled_from(["json", "python", "fenced", "prose", "wrapped"]), st.data())
def test_any_spelling_and_wrapping_reads_back(values, style, data):
    keys = {field: data.draw(st.sampled_from(KEY_SPELLINGS[field])) for field in FIELDS}
    draft = parse_draft(render(values, keys, style))
    assert (draft.name, draft.description, draft.occasion, draft.product_type) == tuple(
        values[field] for field in FIELDS)


@given(st.text(max_size=300))
def test_arbitrary_text_is_a_draft_or_unusable(text):
    try:
        draft = parse_draft(text)
    except UnusableReply:
        return
    assert all(getattr(draft, field) for field in FIELDS)


@given(drafts, st.sampled_from(FIELDS))
def test_a_missing_field_is_unusable(values, missing):
    del values[missing]
    try:
        parse_draft(json.dumps(values))
    except UnusableReply:
        return
    raise AssertionError("a reply without every field was accepted")
