"""Offline image provider: Pillow draws a recognisable shop interior or achievement badge from the spec's facts.

Longer than most modules because it is one concern, a renderer: its palettes, product shapes, badge looks per
celebration and the drawing of both scenes belong together and nothing else uses them.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image, ImageDraw, ImageFont, ImageOps

from core.cpu import cpu_bound
from core.errors import ProviderError
from core.png import encode
from core.provider_types import ImageSpec, RawImage

if TYPE_CHECKING:
    from core.settings import Settings

NAME = "local"
MODEL = "pillow-scene-1"
SS = 2  # drawn at twice the size, then reduced: Pillow's shapes are not anti-aliased
INK, WHITE = (38, 42, 52), (255, 255, 255)
VP, X0, X1, Y0, Y1 = (0.5, 0.4), 0.12, 0.88, 0.1, 0.68  # vanishing point and back-wall corners, as fractions
RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]


class Palette(NamedTuple):
    wall: RGB
    floor: RGB
    counter: RGB
    sign: RGB
    sign_text: RGB
    item_hue: float  # product tints spread around this hue
    planks: bool


PALETTES = {
    "tech": Palette((226, 233, 243), (118, 132, 156), (64, 78, 104), (22, 50, 96), (214, 236, 255), 0.58, False),
    "food": Palette((252, 236, 208), (150, 96, 56), (78, 120, 58), (200, 86, 26), (255, 244, 220), 0.1, True),
    "fashion": Palette((250, 230, 241), (200, 176, 206), (118, 72, 128), (88, 38, 108), (240, 204, 120), 0.88, False),
}
ALIASES = {"electronics": "tech", "gadgets": "tech", "grocery": "food", "bakery": "food", "clothing": "fashion",
           "apparel": "fashion", "boutique": "fashion"}
SHOP_WORDS = {"shop", "store", "boutique", "market", "mart", "cafe", "bakery"}


def _unit(text: str) -> float:
    """A stable number in [0, 1) from the text's hash."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64


def _hls(hue: float, light: float, sat: float) -> RGB:
    return tuple(round(c * 255) for c in colorsys.hls_to_rgb(hue % 1.0, light, sat))


def _mix(colour: RGB, amount: float) -> RGB:
    """Lighten towards white (amount > 0) or darken towards black (amount < 0)."""
    target = 255 if amount > 0 else 0
    return tuple(round(c + (target - c) * abs(amount)) for c in colour)


def _clean(text: str, limit: int = 160) -> str:
    """Printable text for the bundled ASCII font: accents folded, controls dropped, length capped."""
    out = []
    for ch in unicodedata.normalize("NFC", text):
        if unicodedata.category(ch)[0] != "C":
            folded = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            out.append(folded if folded and folded.isascii() else ch)  # the rest draws as the font's box glyph
    text = " ".join("".join(out).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        while len(word) > 1 and font.getlength(word) > width:  # a word wider than the box breaks between glyphs
            cut = next((i for i in range(len(word) - 1, 1, -1) if font.getlength(word[:i]) <= width), 1)
            lines, word = [*lines, word[:cut]], word[cut:]
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _text(d: ImageDraw.ImageDraw, text: str, box: Box, fill: RGB, size: float, lines: int = 1, bold: bool = False):
    """Draw `text` centred in `box`, shrinking and wrapping it to fit, and ending in an ellipsis as a last resort."""
    x0, y0, x1, y1 = box
    size, least = int(size), int(max(8 * SS, size * 0.35))
    while True:
        font, stroke = _font(size), size // 30 if bold else 0  # a stroke in the text's colour stands in for bold
        width, line_h = x1 - x0 - 2 * stroke, sum(font.getmetrics())
        wrapped = _wrap(text, font, width)
        if (len(wrapped) <= lines and len(wrapped) * line_h <= y1 - y0) or size <= least:
            break
        size = max(least, int(size * 0.9))
    keep = max(1, min(lines, int((y1 - y0) // line_h)))
    if len(wrapped) > keep:
        wrapped = wrapped[:keep]
        while wrapped[-1] and font.getlength(wrapped[-1] + "…") > width:
            wrapped[-1] = wrapped[-1][:-1]
        wrapped[-1] += "…"
    top = (y0 + y1 - len(wrapped) * line_h) / 2
    for i, line in enumerate(wrapped):
        d.text(((x0 + x1) / 2, top + i * line_h), line, fill=fill, font=font, anchor="ma", stroke_width=stroke,
               stroke_fill=fill)


def _gradient(w: int, h: int, start: RGB, end: RGB, horizontal: bool = False) -> Image.Image:
    # composited on a one-pixel strip of full length, then repeated across: far cheaper than compositing the
    # whole canvas, and than resampling a short strip up to it (the same pixels, 5x faster; see README, Benchmarks)
    strip = (w, 1) if horizontal else (1, h)
    mask = Image.linear_gradient("L").resize((256, 1) if horizontal else (1, 256)).resize(strip)
    colours = Image.composite(Image.new("RGB", strip, end), Image.new("RGB", strip, start), mask)
    return colours.resize((w, h), Image.Resampling.NEAREST)


def _glow(img: Image.Image, box: Box, strength: float) -> None:
    """Soft light: white painted through a radial gradient."""
    x0, y0, x1, y1 = (round(v) for v in box)
    mask = Image.radial_gradient("L").resize((x1 - x0, y1 - y0))
    img.paste(WHITE, (x0, y0, x1, y1), mask.point(lambda v: int(max(0, 255 - v * 1.42) * strength)))


class Tints(NamedTuple):
    main: RGB
    dark: RGB
    light: RGB


class Pen:
    """Draws in coordinates relative to a box: (0, 0) is its top left, (1, 1) its bottom right."""
    def __init__(self, d: ImageDraw.ImageDraw, box: Box) -> None:
        self.d, self.box = d, box

    def xy(self, u: float, v: float) -> tuple[float, float]:
        return self.box[0] + u * (self.box[2] - self.box[0]), self.box[1] + v * (self.box[3] - self.box[1])

    def sub(self, u0: float, v0: float, u1: float, v1: float) -> Pen:
        return Pen(self.d, (*self.xy(u0, v0), *self.xy(u1, v1)))

    def rect(self, u0: float, v0: float, u1: float, v1: float, fill: tuple, r: float = 0.0) -> None:
        (x0, y0), (x1, y1) = self.xy(u0, v0), self.xy(u1, v1)
        self.d.rounded_rectangle((x0, y0, x1, y1), min(r * self.w(1), (x1 - x0) / 2, (y1 - y0) / 2), fill)

    def oval(self, u0: float, v0: float, u1: float, v1: float, fill: tuple | None, line: tuple | None = None) -> None:
        self.d.ellipse((*self.xy(u0, v0), *self.xy(u1, v1)), fill, line, self.w(0.06))

    def poly(self, points: list[tuple[float, float]], fill: tuple) -> None:
        self.d.polygon([self.xy(u, v) for u, v in points], fill)

    def line(self, points: list[tuple[float, float]], fill: tuple, width: float = 0.025) -> None:
        self.d.line([self.xy(u, v) for u, v in points], fill, self.w(width), "curve")

    def w(self, fraction: float) -> int:
        return max(1, round(fraction * (self.box[2] - self.box[0])))


def _monitor(p: Pen, c: Tints) -> None:
    p.rect(0.36, 0.93, 0.64, 1, INK, 0.03)
    p.rect(0.46, 0.7, 0.54, 0.95, INK)
    p.rect(0, 0.04, 1, 0.74, INK, 0.03)
    p.rect(0.04, 0.09, 0.96, 0.69, c.main)
    p.poly([(0.58, 0.09), (0.78, 0.09), (0.46, 0.69), (0.26, 0.69)], (*WHITE, 45))


def _laptop(p: Pen, c: Tints) -> None:
    p.rect(0.13, 0.12, 0.87, 0.76, INK, 0.03)
    p.rect(0.17, 0.17, 0.83, 0.72, c.main)
    p.poly([(0.13, 0.76), (0.87, 0.76), (1, 0.94), (0, 0.94)], (206, 210, 218))
    p.poly([(0.2, 0.79), (0.8, 0.79), (0.86, 0.88), (0.14, 0.88)], (150, 155, 166))
    p.rect(0, 0.93, 1, 1, (168, 172, 182), 0.02)


def _desktop(p: Pen, c: Tints) -> None:
    _monitor(p.sub(0, 0.25, 0.66, 1), c)
    p.rect(0.72, 0.02, 1, 1, INK, 0.04)
    p.rect(0.76, 0.1, 0.96, 0.16, c.dark, 0.02)
    p.rect(0.76, 0.2, 0.96, 0.26, c.dark, 0.02)
    p.oval(0.82, 0.34, 0.9, 0.42, c.light)


def _mouse(p: Pen, c: Tints) -> None:
    p.line([(0.5, 0.4), (0.5, 0.22), (0.64, 0.1), (0.58, 0)], INK)
    p.oval(0.27, 0.34, 0.73, 1, c.main)
    p.line([(0.5, 0.35), (0.5, 0.6)], c.dark, 0.02)
    p.rect(0.47, 0.43, 0.53, 0.55, c.dark, 0.5)


def _bottle(p: Pen, c: Tints) -> None:
    p.rect(0.42, 0, 0.58, 0.1, c.dark, 0.03)
    p.rect(0.44, 0.08, 0.56, 0.34, c.main)
    p.poly([(0.44, 0.32), (0.56, 0.32), (0.7, 0.46), (0.3, 0.46)], c.main)
    p.rect(0.3, 0.42, 0.7, 1, c.main, 0.08)
    p.rect(0.3, 0.58, 0.7, 0.82, c.light)


def _mug(p: Pen, c: Tints) -> None:
    for u in (0.35, 0.52):  # steam
        p.line([(u, 0.25), (u + 0.05, 0.15), (u, 0.05)], (*WHITE, 160))
    p.oval(0.56, 0.45, 0.88, 0.82, None, c.dark)
    p.rect(0.16, 0.34, 0.72, 1, c.main, 0.08)


def _fruit(p: Pen, c: Tints) -> None:
    p.line([(0.5, 0.34), (0.53, 0.18)], (100, 70, 40), 0.04)
    p.oval(0.54, 0.12, 0.8, 0.26, (86, 160, 70))
    p.oval(0.18, 0.3, 0.82, 1, c.main)
    p.oval(0.3, 0.42, 0.42, 0.56, (*WHITE, 90))


def _shirt(p: Pen, c: Tints) -> None:
    p.poly([(0.34, 0.04), (0.66, 0.04), (0.96, 0.2), (0.86, 0.42), (0.76, 0.37), (0.76, 1), (0.24, 1),
            (0.24, 0.37), (0.14, 0.42), (0.04, 0.2)], c.main)
    p.poly([(0.4, 0.04), (0.6, 0.04), (0.5, 0.16)], c.dark)


def _box(p: Pen, c: Tints) -> None:
    p.poly([(0.12, 0.3), (0.7, 0.3), (0.88, 0.14), (0.3, 0.14)], c.light)
    p.poly([(0.7, 0.3), (0.88, 0.14), (0.88, 0.86), (0.7, 1)], c.dark)
    p.rect(0.12, 0.3, 0.7, 1, c.main)
    p.rect(0.2, 0.52, 0.62, 0.78, (*WHITE, 170), 0.03)


SHAPES = (
    (("monitor", "screen", "display", "tv", "television"), _monitor),
    (("laptop", "notebook", "macbook", "chromebook"), _laptop),
    (("desktop", "computer", "pc", "tower", "workstation"), _desktop),
    (("mouse", "mice"), _mouse),
    (("bottle", "wine", "soju", "beer", "juice", "soda", "water", "sauce", "perfume", "drink", "milk"), _bottle),
    (("mug", "cup", "coffee", "tea"), _mug),
    (("apple", "orange", "fruit", "tomato", "peach", "lemon", "plum", "cherry", "cherries"), _fruit),
    (("shirt", "tee", "dress", "jacket", "hoodie", "sweater", "blouse"), _shirt),
)


def _shape(product: str):
    words = "".join(ch if ch.isalnum() else " " for ch in product.lower()).split()
    for keys, draw in SHAPES:  # "laptops" and "smartphone"-style compounds match too
        if any(w.startswith(k) or w.rstrip("s").endswith(k) for w in words for k in keys):
            return draw
    return _box


def _palette(theme: str) -> Palette:
    for word in _clean(theme).lower().split():
        if word in PALETTES or word in ALIASES:
            return PALETTES[ALIASES.get(word, word)]
    h = _unit(theme.strip().lower())
    return Palette(_hls(h, 0.92, 0.45), _hls(h + 0.05, 0.5, 0.2), _hls(h + 0.5, 0.32, 0.3), _hls(h, 0.28, 0.55),
                   _hls(h, 0.92, 0.5), h + 0.5, _unit(theme + "#floor") < 0.5)


def _storefront(spec: ImageSpec, w: int, h: int) -> Image.Image:
    pal = _palette(spec.theme or spec.prompt)
    img = _gradient(w, h, pal.wall, _mix(pal.wall, -0.14))
    d = ImageDraw.Draw(img, "RGBA")

    def pt(u: float, v: float, t: float = 1.0) -> tuple[float, float]:
        """A point as canvas pixels; t < 1 slides it back towards the vanishing point, t > 1 forwards."""
        return (VP[0] + (u - VP[0]) * t) * w, (VP[1] + (v - VP[1]) * t) * h

    # ceiling, side walls and floor edges all run from the back-wall corners along lines through VP
    t, side = VP[0] / (VP[0] - X0), _mix(pal.wall, -0.2)
    d.polygon([pt(0, 0), pt(1, 0), pt(X1, Y0, t), pt(X1, Y0), pt(X0, Y0), pt(X0, Y0, t)], fill=_mix(pal.wall, 0.5))
    for corner in (X0, X1):
        d.polygon([pt(corner, Y0, t), pt(corner, Y0), pt(corner, Y1), pt(corner, Y1, t)], fill=side)
    rows = [VP[1] + (Y1 - VP[1]) / (1 - k * 0.1) for k in range(7)]  # equal steps in depth, not in pixels
    cols = 12 if pal.planks else 8
    for k in range(len(rows) - 1):
        for i in range(cols):
            u0, u1 = X0 + (X1 - X0) * i / cols, X0 + (X1 - X0) * (i + 1) / cols
            a, b = (rows[k] - VP[1]) / (Y1 - VP[1]), (rows[k + 1] - VP[1]) / (Y1 - VP[1])
            shade = i * 7 % 3 if pal.planks else (i + k) % 2
            fill = (pal.floor, _mix(pal.floor, 0.22), _mix(pal.floor, 0.1))[shade]
            d.polygon([pt(u0, Y1, a), pt(u1, Y1, a), pt(u1, Y1, b), pt(u0, Y1, b)], fill=fill)
            if pal.planks and (i + k) % 2:
                d.line([pt(u0, Y1, a), pt(u1, Y1, a)], fill=(0, 0, 0, 50), width=SS)
    _glow(img, (0.2 * w, -0.25 * h, 0.8 * w, 0.45 * h), 0.55)

    sign = (0.27 * w, 0.115 * h, 0.73 * w, 0.205 * h)
    d.rounded_rectangle(sign, radius=0.012 * h, fill=pal.sign, outline=pal.sign_text, width=max(1, w // 300))
    words = _clean(spec.theme, 40).upper().split()
    title = " ".join(words if words and words[-1].lower() in SHOP_WORDS else [*words, "SHOP"])
    _text(d, title, (sign[0] + 0.03 * w, sign[1] + 0.018 * h, sign[2] - 0.03 * w, sign[3] - 0.014 * h),
          pal.sign_text, sign[3] - sign[1], bold=True)
    d.rectangle((*pt(0.445, 0.39), *pt(0.555, Y1)), fill=pal.counter)  # a door between the two displays
    d.rectangle((*pt(0.455, 0.405), *pt(0.545, Y1)), fill=side)
    d.ellipse((*pt(0.528, 0.54), *pt(0.538, 0.55)), fill=pal.sign_text)

    for cx in (0.28, 0.72):
        d.rectangle((*pt(cx - 0.15, 0.22), *pt(cx + 0.15, Y1)), fill=(*pal.counter, 28))
        _glow(img, (*pt(cx - 0.16, 0.17), *pt(cx + 0.16, 0.46)), 0.5)
        d.rectangle((*pt(cx - 0.15, 0.4), *pt(cx + 0.15, 0.418)), fill=pal.counter)  # wall shelf and brackets
        for bx in (cx - 0.12, cx + 0.1):
            d.polygon([pt(bx, 0.418), pt(bx + 0.02, 0.418), pt(bx + 0.02, 0.45)], fill=pal.counter)
        shadow = [pt(cx - 0.19, 0.87), pt(cx + 0.19, 0.87), pt(cx + 0.16, 0.84), pt(cx - 0.16, 0.84)]
        d.polygon(shadow, fill=(0, 0, 0, 40))
        d.rectangle((*pt(cx - 0.16, 0.7), *pt(cx + 0.16, 0.86)), fill=pal.counter)
        top = [pt(cx - 0.16, 0.7), pt(cx + 0.16, 0.7), pt(cx + 0.16, 0.7, 0.9), pt(cx - 0.16, 0.7, 0.9)]
        d.polygon(top, fill=_mix(pal.counter, 0.45))

    # one place per product, in the order of providers.STOREFRONT_PLACES: item's left and base, then its tag's top
    places = ((0.18, 0.69, 0.74), (0.18, 0.395, 0.425), (0.62, 0.69, 0.74), (0.62, 0.395, 0.425))
    for product, (u0, v1, tag) in zip(spec.products, places, strict=False):
        hue = pal.item_hue + (_unit(product) - 0.5) * 0.45
        tints = Tints(_hls(hue, 0.55, 0.6), _hls(hue, 0.3, 0.45), _hls(hue, 0.85, 0.6))
        d.ellipse((*pt(u0 + 0.01, v1 - 0.012), *pt(u0 + 0.19, v1 + 0.006)), fill=(0, 0, 0, 45))
        _shape(product)(Pen(d, (*pt(u0, v1 - 0.165), *pt(u0 + 0.2, v1))), tints)
        d.rounded_rectangle((*pt(u0 + 0.02, tag), *pt(u0 + 0.18, tag + 0.06)), radius=0.008 * h,
                            fill=(252, 252, 250), outline=tints.dark, width=max(1, w // 500))
        _text(d, _clean(product, 60) or "?", (*pt(u0 + 0.032, tag + 0.007), *pt(u0 + 0.168, tag + 0.053)), INK,
              0.03 * h, lines=2)
    return img


class BadgeLook(NamedTuple):
    """A badge's colours and emblem: the background runs from `start` to `end`, the medal holds the emblem."""

    start: RGB
    end: RGB
    ribbon: RGB
    medal: RGB
    rim: RGB
    emblem: RGB
    ink: RGB
    shape: str


GOLD, GOLD_DARK = (246, 196, 62), (200, 142, 30)
# Occasion keywords (first match wins, as in local_achievement_gen.FLAVOURS, whose celebrations each have a look
# here) and the colours a shopper knows them by.
BADGE_LOOKS = (
    ("halloween", BadgeLook((250, 140, 20), (214, 90, 8), (24, 22, 28), (40, 36, 44), (24, 22, 28), (255, 140, 20),
                            (20, 18, 24), "pumpkin")),
    ("valentine", BadgeLook((255, 196, 218), (247, 143, 185), (206, 22, 52), (255, 236, 242), (176, 16, 44),
                            (214, 24, 58), (150, 12, 40), "heart")),
    ("christmas|boxing", BadgeLook((28, 122, 66), (18, 92, 50), (206, 32, 40), (214, 36, 44), (160, 20, 28),
                                   (30, 140, 70), (255, 250, 240), "tree")),
    ("chuseok|mid-autumn", BadgeLook((24, 36, 84), (40, 56, 120), GOLD, (36, 48, 104), GOLD_DARK, (255, 226, 140),
                                     (250, 214, 120), "moon")),
    ("lunar", BadgeLook((214, 32, 36), (170, 16, 24), GOLD, (250, 204, 72), GOLD_DARK, (210, 30, 34), (252, 212, 90),
                        "lantern")),
    ("new year", BadgeLook((18, 22, 58), (44, 30, 92), (212, 216, 228), GOLD, GOLD_DARK, (24, 28, 70),
                           (250, 214, 120), "burst")),
    ("singles", BadgeLook((236, 30, 60), (255, 90, 50), (255, 255, 255), (255, 255, 255), (220, 220, 226),
                          (226, 30, 56), (255, 255, 255), "elevens")),
    ("black friday", BadgeLook((16, 16, 18), (40, 40, 44), (255, 214, 0), (255, 214, 0), (214, 170, 0),
                               (16, 16, 18), (255, 214, 0), "tag")),
    ("cyber", BadgeLook((10, 20, 60), (10, 40, 110), (0, 220, 255), (0, 220, 255), (0, 160, 200), (10, 20, 60),
                        (0, 220, 255), "tag")),
    ("thanksgiving", BadgeLook((150, 80, 30), (110, 56, 22), (236, 140, 30), (244, 170, 60), (196, 116, 30),
                               (176, 60, 20), (255, 226, 170), "leaf")),
    ("easter|good friday", BadgeLook((232, 220, 250), (255, 244, 200), (150, 220, 190), (255, 250, 230),
                                     (150, 220, 190), (180, 150, 230), (110, 80, 150), "egg")),
    ("mother", BadgeLook((252, 214, 226), (230, 206, 246), (200, 120, 190), (255, 255, 255), (200, 120, 190),
                         (232, 100, 150), (120, 50, 100), "heart")),
    ("father", BadgeLook((30, 58, 110), (80, 130, 190), (200, 220, 240), (255, 255, 255), (200, 220, 240),
                         (30, 58, 110), (255, 255, 255), "star")),
    ("children|aged|coming of age", BadgeLook((255, 220, 80), (130, 200, 250), (250, 110, 90), (255, 255, 255),
                                              (250, 110, 90), (250, 170, 40), (40, 60, 120), "star")),
    ("patrick", BadgeLook((20, 140, 70), (60, 170, 90), GOLD, (250, 250, 240), GOLD_DARK, (20, 140, 70),
                          (255, 255, 255), "shamrock")),
    ("holi", BadgeLook((255, 80, 170), (255, 210, 40), (40, 180, 90), (255, 255, 255), (40, 180, 90), (60, 120, 230),
                       (60, 20, 90), "splash")),
    ("eid|prophet|ashura", BadgeLook((8, 100, 80), (16, 130, 100), GOLD, (16, 90, 74), GOLD_DARK, GOLD, GOLD,
                                     "crescent")),
    ("vesak|buddha|mahavira", BadgeLook((250, 160, 40), (255, 200, 90), (255, 255, 255), (255, 255, 255),
                                        (240, 190, 120), (240, 120, 150), (120, 50, 10), "lotus")),
    ("diwali|navami|janmashtami|guru|dussehra|shivaratri", BadgeLook((90, 20, 110), (150, 30, 110), GOLD, GOLD,
                                                                      GOLD_DARK, (230, 80, 20), GOLD, "flame")),
    ("independence|national|republic|constitution|unity|liberation|foundation|bastille|armistice|veterans|memorial|"
     "victory|juneteenth|presidents|tiradentes|columbus|martin luther|gandhi|ambedkar|hangul|emperor",
     BadgeLook((24, 44, 110), (30, 60, 140), (200, 30, 45), (255, 255, 255), (200, 30, 45), (200, 30, 45),
               (255, 255, 255), "flag")),
    ("labor|labour|may day", BadgeLook((40, 80, 140), (60, 110, 170), (250, 130, 20), (250, 130, 20),
                                       (200, 96, 10), (30, 50, 90), (255, 255, 255), "gear")),
)


def badge_look(occasion: str, key: str = "") -> BadgeLook:
    """The look of the occasion's badges; an occasion of no known family gets bright colours from its name."""
    lowered = occasion.lower()
    for pattern, look in BADGE_LOOKS:
        if re.search(pattern, lowered):
            return look
    hue = _unit(key or lowered)
    return BadgeLook(_hls(hue, 0.8, 0.9), _hls(hue + 0.1, 0.68, 0.85), _hls(hue + 0.6, 0.5, 0.65), GOLD, GOLD_DARK,
                     (255, 250, 235), _hls(hue + 0.05, 0.2, 0.6), "star")


def _star(p: Pen, colour: RGB, points: int = 5, inner: float = 0.42) -> None:
    radii = [0.5 * (1 - k % 2 * (1 - inner)) for k in range(2 * points)]
    p.poly([(0.5 + radius * math.sin(k * math.pi / points), 0.5 - radius * math.cos(k * math.pi / points))
            for k, radius in enumerate(radii)], colour)


def _emblem(p: Pen, shape: str, c: RGB, back: RGB) -> None:
    """The occasion's symbol inside the unit box of `p`, in colour `c` on the medal's colour `back`."""
    if shape == "pumpkin":
        p.rect(0.45, 0.04, 0.55, 0.22, (70, 110, 40), 0.2)
        for u in (0.06, 0.5, 0.26):
            p.oval(u, 0.16, u + 0.44, 0.92, c)
        p.poly([(0.26, 0.46), (0.4, 0.46), (0.33, 0.34)], back)
        p.poly([(0.6, 0.46), (0.74, 0.46), (0.67, 0.34)], back)
        p.poly([(0.24, 0.6), (0.76, 0.6), (0.66, 0.76), (0.34, 0.76)], back)
    elif shape == "heart":
        p.oval(0.08, 0.14, 0.54, 0.6, c)
        p.oval(0.46, 0.14, 0.92, 0.6, c)
        p.poly([(0.1, 0.46), (0.9, 0.46), (0.5, 0.94)], c)
    elif shape == "tree":
        for k, (top, bottom, half) in enumerate(((0.12, 0.44, 0.22), (0.3, 0.64, 0.32), (0.48, 0.84, 0.42))):
            p.poly([(0.5, top), (0.5 + half, bottom), (0.5 - half, bottom)], _mix(c, -0.1 * k))
        p.rect(0.44, 0.84, 0.56, 0.98, (110, 70, 40))
        _star(p.sub(0.4, 0.0, 0.6, 0.2), GOLD)
    elif shape == "moon":
        p.oval(0.12, 0.12, 0.88, 0.88, c)
        p.oval(0.3, 0.3, 0.44, 0.44, _mix(c, -0.12))
        p.oval(0.52, 0.56, 0.7, 0.74, _mix(c, -0.12))
    elif shape == "lantern":
        p.rect(0.38, 0.04, 0.62, 0.16, GOLD_DARK, 0.1)
        p.oval(0.14, 0.12, 0.86, 0.84, c)
        for u in (0.34, 0.5, 0.66):
            p.line([(u, 0.16), (u, 0.8)], GOLD_DARK, 0.02)
        p.rect(0.38, 0.8, 0.62, 0.9, GOLD_DARK, 0.1)
        p.line([(0.5, 0.9), (0.5, 1.0)], c, 0.05)
    elif shape == "burst":
        for k in range(12):
            angle = k * math.pi / 6
            p.line([(0.5 + 0.16 * math.cos(angle), 0.5 + 0.16 * math.sin(angle)),
                    (0.5 + 0.46 * math.cos(angle), 0.5 + 0.46 * math.sin(angle))], c, 0.06)
        p.oval(0.4, 0.4, 0.6, 0.6, c)
    elif shape == "elevens":
        for u in (0.12, 0.56):
            p.poly([(u, 0.28), (u + 0.14, 0.14), (u + 0.14, 0.86), (u + 0.04, 0.86), (u + 0.04, 0.34)], c)
            p.rect(u + 0.22, 0.14, u + 0.32, 0.86, c)
    elif shape == "tag":
        p.poly([(0.08, 0.5), (0.36, 0.18), (0.92, 0.18), (0.92, 0.82), (0.36, 0.82)], c)
        p.oval(0.26, 0.44, 0.38, 0.56, back)
        p.line([(0.5, 0.68), (0.78, 0.32)], back, 0.05)
        p.oval(0.48, 0.3, 0.58, 0.4, back)
        p.oval(0.7, 0.6, 0.8, 0.7, back)
    elif shape == "leaf":
        p.poly([(0.5, 0.04), (0.62, 0.3), (0.92, 0.22), (0.8, 0.5), (0.96, 0.6), (0.62, 0.7), (0.54, 0.88),
                (0.46, 0.88), (0.38, 0.7), (0.04, 0.6), (0.2, 0.5), (0.08, 0.22), (0.38, 0.3)], c)
        p.line([(0.5, 0.2), (0.5, 0.98)], _mix(c, -0.3), 0.04)
    elif shape == "egg":
        p.oval(0.2, 0.06, 0.8, 0.96, c)
        p.line([(0.22, 0.5), (0.32, 0.42), (0.42, 0.5), (0.52, 0.42), (0.62, 0.5), (0.72, 0.42), (0.78, 0.48)],
               (255, 220, 120), 0.06)
    elif shape == "shamrock":
        for u, v in ((0.28, 0.1), (0.06, 0.4), (0.5, 0.4)):
            p.oval(u, v, u + 0.44, v + 0.44, c)
        p.line([(0.5, 0.6), (0.56, 0.98)], c, 0.07)
    elif shape == "splash":
        for (u, v, size), colour in zip(((0.1, 0.1, 0.42), (0.48, 0.14, 0.4), (0.14, 0.5, 0.4), (0.5, 0.5, 0.42)),
                                        ((255, 60, 160), (255, 200, 0), (40, 180, 90), c), strict=True):
            p.oval(u, v, u + size, v + size, colour)
    elif shape == "crescent":
        p.oval(0.1, 0.1, 0.82, 0.82, c)
        p.oval(0.28, 0.04, 0.96, 0.72, back)
        _star(p.sub(0.62, 0.52, 0.92, 0.82), c)
    elif shape == "lotus":
        for points in ([(0.5, 0.08), (0.66, 0.5), (0.5, 0.86), (0.34, 0.5)], [(0.06, 0.36), (0.46, 0.56), (0.5, 0.86),
                       (0.2, 0.7)], [(0.94, 0.36), (0.54, 0.56), (0.5, 0.86), (0.8, 0.7)]):
            p.poly(points, c)
        p.rect(0.14, 0.84, 0.86, 0.92, (60, 150, 90), 0.5)
    elif shape == "flame":
        p.poly([(0.5, 0.04), (0.66, 0.34), (0.64, 0.52), (0.5, 0.6), (0.36, 0.52), (0.34, 0.34)], c)
        p.oval(0.42, 0.32, 0.58, 0.56, (255, 214, 80))
        p.poly([(0.08, 0.6), (0.92, 0.6), (0.74, 0.9), (0.26, 0.9)], (150, 30, 60))
    elif shape == "flag":
        p.rect(0.08, 0.06, 0.13, 0.98, (120, 120, 130))
        for k in range(5):
            p.rect(0.13, 0.1 + k * 0.12, 0.92, 0.16 + k * 0.12, c)
        p.rect(0.13, 0.1, 0.46, 0.4, (30, 60, 140))
        _star(p.sub(0.2, 0.14, 0.4, 0.36), (255, 255, 255))
    elif shape == "gear":
        for k in range(8):
            angle = k * math.pi / 4
            p.line([(0.5, 0.5), (0.5 + 0.44 * math.cos(angle), 0.5 + 0.44 * math.sin(angle))], c, 0.16)
        p.oval(0.16, 0.16, 0.84, 0.84, c)
        p.oval(0.36, 0.36, 0.64, 0.64, back)
    else:
        _star(p, c)


def _badge(spec: ImageSpec, w: int, h: int) -> Image.Image:
    key = f"{spec.prompt}\n{spec.title}\n{spec.caption}"
    look = badge_look(spec.caption, key)
    img = _gradient(w, h, look.start, look.end, horizontal=True)
    d = ImageDraw.Draw(img, "RGBA")
    cx, cy, r = w / 2, h * 0.29, min(w, h) * 0.19  # emblem centre and radius, for square or wide canvases
    for k in range(0, 32, 2):  # a soft sunburst behind the emblem
        ray = [(cx + 2 * (w + h) * math.cos(a), cy + 2 * (w + h) * math.sin(a)) for a in (k * 0.196, k * 0.196 + 0.196)]
        d.polygon([(cx, cy), *ray], fill=(*WHITE, 22))
    _glow(img, (cx - 3 * r, cy - 3 * r, cx + 3 * r, cy + 3 * r), 0.3)
    for side in (-1, 1):
        tail = [(0.2, 0), (0.95, 0.2), (1, 1.45), (0.72, 1.22), (0.45, 1.5)]
        d.polygon([(cx + side * x * r, cy + y * r) for x, y in tail], fill=_mix(look.ribbon, -0.12 * (side + 1)))
    if _unit(key + "#emblem") < 0.5:  # a rosette medal
        rim = [(cx + r * (1 - k % 2 * 0.12) * math.cos(k * math.pi / 16),
                cy + r * (1 - k % 2 * 0.12) * math.sin(k * math.pi / 16)) for k in range(32)]
        d.polygon(rim, fill=look.rim)
        d.ellipse((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=look.medal)
    else:  # a shield
        shield = [(-1, -0.95), (1, -0.95), (1, 0.1), (0, 1.05), (-1, 0.1)]
        d.polygon([(cx + x * r, cy + y * r) for x, y in shield], fill=look.rim)
        d.polygon([(cx + x * 0.84 * r, cy + (y - 0.03) * 0.84 * r) for x, y in shield], fill=look.medal)
    _emblem(Pen(d, (cx - 0.58 * r, cy - 0.62 * r, cx + 0.58 * r, cy + 0.54 * r)), look.shape, look.emblem, look.medal)
    _text(d, _clean(spec.title) or "Achievement", (0.05 * w, 0.6 * h, 0.95 * w, 0.85 * h), look.ink, 0.15 * h,
          lines=3, bold=True)
    _text(d, _clean(spec.caption), (0.15 * w, 0.86 * h, 0.85 * w, 0.96 * h), _mix(look.ink, 0.2 if sum(look.ink) < 384
          else -0.1), 0.08 * h)
    return img


CARD_SIZE = (1200, 630)  # what link previews show (Open Graph, summary_large_image cards)


def share_card(badge_png: bytes | None, name: str, occasion: str, site: str) -> bytes:
    """The link-preview card of a badge, as PNG: the badge on the left, its name and occasion beside it, in the
    occasion's colours; a badge of any shape (the square ones, the wide ones made before) fits its place."""
    if badge_png is None:
        return encode(_card(None, name, occasion, site))
    with Image.open(io.BytesIO(badge_png), formats=["PNG"]) as badge:
        return encode(_card(badge, name, occasion, site))


def _card(badge: Image.Image | None, name: str, occasion: str, site: str) -> Image.Image:
    w, h = CARD_SIZE
    look = badge_look(occasion, f"{name}\n{occasion}")
    img = _gradient(w, h, look.start, look.end, horizontal=True)
    d = ImageDraw.Draw(img, "RGBA")
    side = h - 100  # the badge's square, 50 px from the edges
    d.rounded_rectangle((38, 38, 62 + side, 62 + side), radius=28, fill=(255, 255, 255, 235))
    if badge is not None:
        shown = ImageOps.contain(badge.convert("RGB"), (side, side), Image.Resampling.BICUBIC)
        img.paste(shown, (50 + (side - shown.width) // 2, 50 + (side - shown.height) // 2))
    else:
        _emblem(Pen(d, (50 + side * 0.2, 50 + side * 0.2, 50 + side * 0.8, 50 + side * 0.8)), look.shape,
                look.emblem, WHITE)
    ink = look.ink if sum(look.start) > 384 else WHITE
    left = 110 + side
    _text(d, _clean(occasion, 80), (left, 70, w - 50, 130), _mix(ink, 0.15 if sum(ink) < 384 else -0.1), 40)
    _text(d, _clean(name) or "Achievement", (left, 150, w - 50, 470), ink, 76, lines=4, bold=True)
    _text(d, _clean(site, 60), (left, 500, w - 50, 560), _mix(ink, 0.25 if sum(ink) < 384 else -0.15), 30)
    return img


def is_configured(settings: Settings) -> bool:
    """The local renderer needs no key or network, so it is always available."""
    return True


def model(settings: Settings) -> str:
    """The renderer's version: a new one draws other pictures for the same spec."""
    return MODEL


def generate_image(spec: ImageSpec, settings: Settings) -> RawImage:
    """Draw the spec's storefront or badge as PNG bytes of exactly spec.width x spec.height."""
    if not (0 < spec.width <= 8192 and 0 < spec.height <= 8192):
        raise ProviderError(NAME, f"the local renderer cannot draw a {spec.width}x{spec.height} image")
    try:
        png = cpu_bound(_render, spec)
    except (OSError, ValueError, MemoryError) as error:
        raise ProviderError(NAME, f"the local renderer failed: {error}") from None
    seed = int.from_bytes(hashlib.sha256(spec.prompt.encode("utf-8", "surrogatepass")).digest()[:4], "big")
    return RawImage(png, MODEL, seed)


def _render(spec: ImageSpec) -> bytes:
    draw = _badge if spec.kind == "badge" else _storefront
    return encode(draw(spec, spec.width * SS, spec.height * SS).reduce(SS))
