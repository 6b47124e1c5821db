"""Generation providers behind one interface: choosing them, failing over, and checking what they return.

An image provider is a module with `NAME`, `is_configured(settings)`, `model(settings)` and
`generate_image(spec, settings) -> RawImage`; a text provider has `NAME`,
`is_configured(settings)` and `write_achievement(day, product, settings) -> AchievementDraft`.
Both raise only the `ProviderError` family of `core/errors.py`; a remote one also has `bill(...)` for the ledger.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, date, datetime
from types import ModuleType

from PIL import Image

import achievement_gen
import clipdrop_gen
import local_achievement_gen
import local_image_gen
import stability_gen
from core import image_cache
from core import ledger as ledgers
from core.celebrations import nearest_celebration
from core.cpu import cpu_bound, take_turn
from core.errors import ContentRejected, ProviderError
from core.image_cache import ImageCache
from core.png import MAX_SOURCE_PIXELS, PNG_SIGNATURE, add_text_chunks, check_png, fit_to_png
from core.provider_slots import ProviderSlots
from core.provider_types import AchievementDraft, GeneratedImage, ImageSpec, RawImage
from core.settings import Settings
from core.shared_counters import SharedState

log = logging.getLogger(__name__)

STOREFRONT_SIZE = (1024, 1024)
BADGE_SIZE = (1024, 1024)  # square, as Clipdrop draws it and as badges are everywhere (Open Badges, app icons)
STOREFRONT_PLACES = ("bottom left", "top left", "bottom right", "top right")


def storefront_spec(theme: str, products: list[str]) -> ImageSpec:
    """The text-to-image request for a shop of `theme` showing up to four products, each at its own place."""
    shown = tuple(products[: len(STOREFRONT_PLACES)])
    placed = ", ".join(f"a {product} at the {place}" for product, place in zip(shown, STOREFRONT_PLACES, strict=False))
    prompt = (
        f"Photo-realistic interior of a {theme} shop, minimal and uncluttered, soft daylight. "
        f"One of each product is on display, each in its own place: {placed or 'empty shelves'}. "
        "Clean shelves and counters, no people, no text."
    )
    width, height = STOREFRONT_SIZE
    return ImageSpec("storefront", prompt, width, height, theme=theme, products=shown)


def badge_spec(draft: AchievementDraft) -> ImageSpec:
    """The text-to-image request for an achievement's badge."""
    prompt = (
        f"Icon of an achievement badge called '{draft.name}' for {draft.occasion}, "
        f"celebrating a {draft.product_type}. Digital art, square, simple, elegant, minimalist, bright colours, "
        "one centred emblem on a plain background."
    )
    width, height = BADGE_SIZE
    return ImageSpec("badge", prompt, width, height, title=draft.name, caption=draft.occasion)


class Cooldown:
    """Remembers which providers failed recently: in this process, or for every process through shared state."""

    def __init__(self, seconds: float, state: SharedState | None = None) -> None:
        self.seconds = seconds
        self.state = state
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def fail(self, name: str) -> None:
        if self.seconds <= 0:
            return
        if self.state is not None:
            try:
                self.state.put(f"cooldown:{name}", 1, self.seconds)
                return
            except Exception:  # the shared store is down: remember it here rather than fail the request
                log.exception("could not share the cool-down of %s", name)
        with self._lock:
            self._until[name] = time.monotonic() + self.seconds

    def active(self, name: str) -> bool:
        if self.state is not None:
            try:
                if self.state.get(f"cooldown:{name}") is not None:
                    return True
            except Exception:
                log.exception("could not read the cool-down of %s", name)
        with self._lock:
            return self._until.get(name, 0.0) > time.monotonic()


class Generator:
    """The providers chosen by the settings, and how a request moves through them."""

    def __init__(self, settings: Settings,
                 watch: Callable[[str, str], AbstractContextManager] | None = None,
                 state: SharedState | None = None, ledger: ledgers.Ledger | None = None,
                 cache: ImageCache | None = None, slots: ProviderSlots | None = None) -> None:
        self.settings = settings
        self.slots = slots or ProviderSlots(None, {}, settings.provider_lease_s)  # the vendor caps
        self.watch = watch or (lambda _kind, _provider: nullcontext())  # metrics: observability.watch_provider
        self.cooldown = Cooldown(settings.provider_cooldown_s, state)
        self.ledger = ledger  # a row per provider call
        self.cache = cache  # pictures already paid for
        self.image_chain = image_chain(settings)
        self.text_provider = text_provider(settings)

    def generate_image(self, spec: ImageSpec, *, fresh: bool = False) -> GeneratedImage:
        """Try the image providers in order, skipping those cooling down while another can serve; each one's
        picture of this exact request is reused from the cache unless `fresh` asks for a new one."""
        # A lone provider is always tried: no need to ask the shared store whether it is cooling down.
        chain = self.image_chain
        ready = [p for p in chain if not self.cooldown.active(p.NAME)] if len(chain) > 1 else list(chain)
        cooling = [p for p in chain if p not in ready]
        last_error: ProviderError | None = None
        for provider in ready + cooling:
            try:
                return self.draw(provider, spec, fresh)
            except ContentRejected:
                raise
            except ProviderError as error:
                log.warning("image provider %s failed: %s", provider.NAME, error.message)
                if len(self.image_chain) > 1:
                    self.cooldown.fail(provider.NAME)
                last_error = error
        assert last_error is not None
        raise last_error

    def draw(self, provider: ModuleType, spec: ImageSpec, fresh: bool) -> GeneratedImage:
        """One provider's picture for the spec: the cached one (a ledger row `cached`, cost 0), else drawn now and
        kept for the next identical request."""
        model = provider.model(self.settings)
        started = time.perf_counter()
        with image_cache.flight(self.cache, provider.NAME, model, spec, fresh=fresh) as flight:
            if flight.image is not None:
                if self.ledger is not None:
                    self.ledger.record(provider=provider.NAME, model=model, kind="image", outcome=ledgers.CACHED,
                                       latency_ms=(time.perf_counter() - started) * 1000)
                return flight.image
            with self.watch("image", provider.NAME), ledgers.calls(self.ledger, "image", provider):
                with self.slots.hold(provider.NAME):  # the vendor's slot, for its call only
                    raw = provider.generate_image(spec, self.settings)
                # A burst's pictures come back together: handed to the native threads one per turn, not fifty at
                # once, whose Python (to_png holds the GIL between its C calls) then held up this worker's loop.
                take_turn()
                png = cpu_bound(to_png, raw, spec, provider.NAME)
            return flight.keep(GeneratedImage(png, spec.width, spec.height, provider.NAME))

    def write_achievement(self, day: date, product: str) -> AchievementDraft:
        """Ask the text provider for an achievement tied to the celebration nearest `day`."""
        with self.watch("text", self.text_provider.NAME), ledgers.calls(self.ledger, "text", self.text_provider), \
                self.slots.hold(self.text_provider.NAME):
            draft = self.text_provider.write_achievement(day, product, self.settings)
        take_turn()  # what follows is a stretch of Python: behind whatever else is ready
        return draft


def image_chain(settings: Settings) -> list[ModuleType]:
    """The image providers to try, in order; failover only under `auto` with both keys set."""
    remote = [clipdrop_gen, stability_gen]
    if settings.image_provider == "auto":
        return [p for p in remote if p.is_configured(settings)] or [local_image_gen]
    return [{"clipdrop": clipdrop_gen, "stability": stability_gen, "local": local_image_gen}[settings.image_provider]]


def text_provider(settings: Settings) -> ModuleType:
    """The text provider: OpenAI when chosen or when `auto` finds its key, else the local writer."""
    if settings.text_provider == "openai" or (settings.text_provider == "auto" and settings.openai_api_key):
        return achievement_gen
    return local_achievement_gen


def to_png(raw: RawImage, spec: ImageSpec, provider: str) -> bytes:
    """Check that `raw` is an image, fit it to the spec's size as PNG, and record its provenance.

    Each piece of work once: a PNG of the right size is only checked (chunk CRCs, no decoding) and keeps its
    bytes; anything else is decoded once, cropped and encoded once.
    """
    not_an_image = ProviderError(provider, f"{provider} returned bytes that are not an image.")
    png = None
    if raw.data.startswith(PNG_SIGNATURE):
        try:
            size = check_png(raw.data)
        except ValueError:
            raise not_an_image from None
        if size[0] * size[1] > MAX_SOURCE_PIXELS:
            raise not_an_image
        if size == (spec.width, spec.height):
            png = raw.data
    if png is None:
        try:
            png = fit_to_png(raw.data, spec.width, spec.height)
        except ValueError:
            raise not_an_image from None
    provenance = {"prompt": spec.prompt, "provider": provider, "model": raw.model}
    if raw.seed is not None:
        provenance["seed"] = str(raw.seed)
    provenance["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    return add_text_chunks(png, provenance)


def warm_up(settings: Settings) -> None:
    """Pay before the first request what a worker's first generation would: this year's celebrations, Pillow's
    decode-fit-encode path, the text provider's client (gunicorn.conf.py runs this once, before forking)."""
    nearest_celebration(datetime.now(UTC).date())
    sample = io.BytesIO()
    Image.new("RGB", (48, 32), "gray").save(sample, "JPEG")
    to_png(RawImage(sample.getvalue(), "warm-up"), ImageSpec("badge", "warm-up", 21, 9), "warm-up")
    if text_provider(settings) is achievement_gen:
        achievement_gen.warm_up(settings)
