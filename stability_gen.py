"""stability text-to-image provider (the real HTTP client arrives with the providers issue)."""

from __future__ import annotations

from config import Settings
from errors import ProviderError

NAME = "stability"


def is_configured(settings: Settings) -> bool:
    return bool(settings.stability_api_key)


def generate_image(spec, settings: Settings):
    raise ProviderError(NAME, "stability is not available yet")
