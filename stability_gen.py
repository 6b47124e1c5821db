"""Stability AI v2beta Stable Image generate: multipart fields, PNG back, moderation in two forms."""

from __future__ import annotations

from collections.abc import Mapping

from core import http_client
from core.errors import ContentRejected, ProviderError
from core.provider_types import ImageSpec, RawImage
from core.settings import Settings

NAME = "stability"
PATH = "/v2beta/stable-image/generate/{engine}"
NEGATIVE_PROMPT = (
    "text, letters, words, captions, labels, watermark, logo, signature, clutter, crowd, messy, busy background, "
    "blurry, distorted, deformed, low quality"
)
# Credits per generation by engine (1 credit = 0.01 USD by default); `sd3` is its default model, sd3.5-large.
# Failed generations are not charged. See README, "Spend and limits", for the source.
CREDITS = {"core": 3.0, "ultra": 8.0, "sd3": 6.5}
# Only the core engine takes a style preset.
CORE_STYLES = {"storefront": "photographic", "badge": "digital-art"}


def is_configured(settings: Settings) -> bool:
    """Stability AI is available when STABILITY_API_KEY is set."""
    return bool(settings.stability_api_key)


def model(settings: Settings) -> str:
    """The model that draws: STABILITY_ENGINE's."""
    return f"stable-image-{settings.stability_engine}"


def generate_image(spec: ImageSpec, settings: Settings) -> RawImage:
    """Ask the STABILITY_ENGINE endpoint for the spec's picture, at the spec's aspect ratio, as PNG."""
    key = settings.stability_api_key
    if not key:
        raise ProviderError(NAME, "Stability AI needs STABILITY_API_KEY to be set.")
    engine = settings.stability_engine
    fields = {
        "prompt": spec.prompt,
        "negative_prompt": NEGATIVE_PROMPT,
        "aspect_ratio": spec.aspect_ratio,
        "output_format": "png",
    }
    if engine == "core" and spec.kind in CORE_STYLES:
        fields["style_preset"] = CORE_STYLES[spec.kind]
    response = http_client.post(
        NAME, settings.stability_api_host + PATH.format(engine=engine), settings, model=model(settings),
        headers={"authorization": f"Bearer {key}", "accept": "image/*"},
        files={"none": ""},  # forces multipart/form-data for text-only fields
        data=fields,
    )
    if response.status_code == 403 and _error_name(response) == "content_moderation":
        raise ContentRejected(NAME, "stability's content filter refused the prompt.")
    http_client.refuse_unless_ok(NAME, response, key, "STABILITY_API_KEY")
    finish = response.headers.get("finish-reason", "SUCCESS").strip().upper()
    if finish == "CONTENT_FILTERED":
        raise ContentRejected(NAME, "stability's content filter blocked the picture for this prompt.")
    if finish != "SUCCESS":
        raise ProviderError(NAME, f"stability did not finish the picture (finish-reason {finish[:40]}).")
    seed = response.headers.get("seed", "").strip()
    return RawImage(response.content, model(settings), int(seed) if seed.isdigit() else None)


def _error_name(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("name", "")) if isinstance(body, dict) else ""


def bill(status: int | None, headers: Mapping[str, str], usage: Mapping[str, object], settings: Settings) -> dict:
    """One attempt's ledger figures: the engine's credits for a picture delivered, none for a failure."""
    credits = CREDITS.get(settings.stability_engine, 0.0) if status == 200 else 0.0
    return {"credits": credits, "cost_usd": credits * settings.price_stability_credit_usd}
