"""OpenAI (or any OpenAI-compatible server) achievement writer (the real client arrives with the providers issue)."""

from __future__ import annotations

from config import Settings
from errors import ProviderError

NAME = "openai"


def is_configured(settings: Settings) -> bool:
    return bool(settings.openai_api_key)


def write_achievement(day, product: str, settings: Settings):
    raise ProviderError(NAME, "openai is not available yet")
