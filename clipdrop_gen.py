"""Clipdrop text-to-image: one multipart `prompt`, a 1024x1024 PNG back, credits left in a response header.

The credit headers are read by the ledger (spend.py), which shares the last count with every process.
"""

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


def is_configured(settings: Settings) -> bool:
    """Clipdrop is available when CLIPDROP_API_KEY is set."""
    return bool(settings.clipdrop_api_key)


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
