"""Clipdrop text-to-image: one multipart `prompt`, a 1024x1024 PNG back, credits left in a response header."""

from __future__ import annotations

import logging

import http_client
from config import Settings
from errors import ProviderError
from provider_types import ImageSpec, RawImage

log = logging.getLogger(__name__)

NAME = "clipdrop"
MODEL = "clipdrop text-to-image v1"
PATH = "/text-to-image/v1"
MAX_PROMPT_CHARS = 1000

_remaining_credits: int | None = None


def is_configured(settings: Settings) -> bool:
    """Clipdrop is available when CLIPDROP_API_KEY is set."""
    return bool(settings.clipdrop_api_key)


def remaining_credits() -> int | None:
    """The credits Clipdrop reported left on our key at its last answer, or None before any answer."""
    return _remaining_credits


def generate_image(spec: ImageSpec, settings: Settings) -> RawImage:
    """Ask Clipdrop for the spec's picture; the bytes are checked and fitted to the spec by the caller."""
    key = settings.clipdrop_api_key
    if not key:
        raise ProviderError(NAME, "Clipdrop needs CLIPDROP_API_KEY to be set.")
    response = http_client.post(
        NAME, settings.clipdrop_api_url + PATH, settings,
        headers={"x-api-key": key},
        files={"prompt": (None, clip_prompt(spec.prompt), "text/plain")},
    )
    _record_credits(response)
    http_client.refuse_unless_ok(NAME, response, key, "CLIPDROP_API_KEY")
    return RawImage(response.content, MODEL)


def clip_prompt(prompt: str) -> str:
    """The prompt cut at a word to Clipdrop's limit of 1000 characters."""
    prompt = " ".join(prompt.split())
    if len(prompt) <= MAX_PROMPT_CHARS:
        return prompt
    return prompt[: MAX_PROMPT_CHARS + 1].rsplit(" ", 1)[0][:MAX_PROMPT_CHARS]


def _record_credits(response) -> None:
    global _remaining_credits
    if response.status_code == 402:
        _remaining_credits = 0
    value = response.headers.get("x-remaining-credits", "").strip()
    if value.isdigit():
        _remaining_credits = int(value)
        log.info("clipdrop: %d credits left", _remaining_credits)
