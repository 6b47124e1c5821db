"""Clipdrop text-to-image: one multipart `prompt`, a 1024x1024 PNG back, credits left in a response header.

`bill` reads the credit headers for the ledger (core/ledger.py), which shares the last count with every process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from core import http_client
from core.errors import ProviderError
from core.ledger import vendor_number
from core.provider_types import ImageSpec, RawImage
from core.settings import Settings

log = logging.getLogger(__name__)

NAME = "clipdrop"
MODEL = "clipdrop text-to-image v1"
PATH = "/text-to-image/v1"
MAX_PROMPT_CHARS = 1000


def is_configured(settings: Settings) -> bool:
    """Clipdrop is available when CLIPDROP_API_KEY is set."""
    return bool(settings.clipdrop_api_key)


def model(settings: Settings) -> str:
    """The model that draws: the one Clipdrop has."""
    return MODEL


def generate_image(spec: ImageSpec, settings: Settings) -> RawImage:
    """Ask Clipdrop for the spec's picture; the bytes are checked and fitted to the spec by the caller."""
    key = settings.clipdrop_api_key
    if not key:
        raise ProviderError(NAME, "Clipdrop needs CLIPDROP_API_KEY to be set.")
    response = http_client.post(
        NAME, settings.clipdrop_api_url + PATH, settings, model=MODEL,
        headers={"x-api-key": key},
        files={"prompt": (None, clip_prompt(spec.prompt), "text/plain")},
    )
    http_client.refuse_unless_ok(NAME, response, key, "CLIPDROP_API_KEY")
    return RawImage(response.content, MODEL)


def clip_prompt(prompt: str) -> str:
    """The prompt cut at a word to Clipdrop's limit of 1000 characters."""
    prompt = " ".join(prompt.split())
    if len(prompt) <= MAX_PROMPT_CHARS:
        return prompt
    return prompt[: MAX_PROMPT_CHARS + 1].rsplit(" ", 1)[0][:MAX_PROMPT_CHARS]


def bill(status: int | None, headers: Mapping[str, str], usage: Mapping[str, object], settings: Settings) -> dict:
    """One attempt's ledger figures: Clipdrop's `x-credits-consumed` (else its documented price, 1 credit per
    successful call) and `x-remaining-credits` (0 after a 402), at PRICE_CLIPDROP_CREDIT_USD a credit."""
    credits = vendor_number(headers.get("x-credits-consumed"))
    if credits is None:
        credits = 1.0 if status == 200 else 0.0
    remaining = vendor_number(headers.get("x-remaining-credits"))
    if remaining is None and status == 402:
        remaining = 0
    return {"credits": credits, "remaining_credits": None if remaining is None else int(remaining),
            "cost_usd": credits * settings.price_clipdrop_credit_usd}
