"""The types that pass between the generator and its providers: what to draw or write, and what comes back.

Kept apart from `providers.py` so that each provider module imports its types without importing the generator,
which imports every provider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The aspect ratios image vendors take (Stability's list); a spec asks for the one nearest its size.
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "21:9", "9:21", "2:3", "3:2", "4:5", "5:4")


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
        """The vendors' aspect ratio nearest this size ("1:1" for a square badge or storefront)."""
        shape = math.log(self.width / self.height)
        return min(ASPECT_RATIOS, key=lambda ratio: abs(math.log(_ratio(ratio)) - shape))


def _ratio(text: str) -> float:
    width, height = text.split(":")
    return int(width) / int(height)


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
    cached: bool = False  # reused from the image cache (core/image_cache.py), not drawn for this request
    sha256: str | None = None  # its hash, once the store has it: a 1 MB picture is hashed once, not per save


@dataclass(frozen=True)
class AchievementDraft:
    name: str
    description: str
    occasion: str
    product_type: str
