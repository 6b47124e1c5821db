"""The types that pass between the generator and its providers: what to draw or write, and what comes back.

Kept apart from `providers.py` so that each provider module imports its types without importing the generator,
which imports every provider.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageSpec:
    """What to draw: the prompt for remote models, plus the structured facts the local renderer draws from."""

    kind: str  # "storefront" or "badge"
    prompt: str
    width: int
    height: int
    theme: str = ""
    products: tuple[str, ...] = ()
    title: str = ""
    caption: str = ""

    @property
    def aspect_ratio(self) -> str:
        return "1:1" if self.width == self.height else "21:9"


@dataclass(frozen=True)
class RawImage:
    """Bytes as a provider returned them, before they are checked."""

    data: bytes
    model: str
    seed: int | None = None


@dataclass(frozen=True)
class GeneratedImage:
    """A checked PNG of the size asked for, with its provenance written into it."""

    png: bytes
    width: int
    height: int
    provider: str


@dataclass(frozen=True)
class AchievementDraft:
    name: str
    description: str
    occasion: str
    product_type: str
