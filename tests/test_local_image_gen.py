"""The offline Pillow renderer: valid PNGs of the asked size, deterministic, products at their places, any text."""

from __future__ import annotations

import colorsys
import io

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

import local_achievement_gen
import local_image_gen
import providers
from core import celebrations
from core.errors import ProviderError
from core.settings import Settings

SETTINGS = Settings()


def render(spec: providers.ImageSpec) -> Image.Image:
    raw = local_image_gen.generate_image(spec, SETTINGS)
    image = Image.open(io.BytesIO(raw.data))
    assert image.format == "PNG"
    image.load()
    return image.convert("RGB")


def badge(name: str = "Spooky Soju Sipper", occasion: str = "Halloween") -> providers.ImageSpec:
    return providers.badge_spec(providers.AchievementDraft(name, "Sip soju in a costume.", occasion, "soju"))


def quadrant(place: str, width: int, height: int) -> tuple[int, int, int, int]:
    """The canvas quarter a place such as "bottom left" names."""
    vertical, horizontal = place.split()
    left = 0 if horizontal == "left" else width // 2
    top = 0 if vertical == "top" else height // 2
    return left, top, left + width // 2, top + height // 2


def difference_by_quadrant(a: Image.Image, b: Image.Image) -> dict[str, float]:
    diff = ImageChops.difference(a, b).convert("L")
    return {
        place: sum(ImageStat.Stat(diff.crop(quadrant(place, *a.size))).sum) for place in providers.STOREFRONT_PLACES
    }


def test_provider_interface():
    assert local_image_gen.NAME == "local"
    assert local_image_gen.is_configured(SETTINGS) is True


@pytest.mark.parametrize(
    "spec",
    [
        providers.storefront_spec("tech", ["mouse", "desktop", "monitor", "laptops"]),
        badge(),
        providers.ImageSpec("storefront", "a small food shop", 640, 360, theme="food", products=("apple",)),
        providers.ImageSpec("badge", "a wide badge", 1344, 576, title="Wide", caption="Test"),
    ],
    ids=["storefront", "badge", "wide-storefront", "wide-badge"],
)
def test_png_of_exactly_the_spec_size(spec):
    raw = local_image_gen.generate_image(spec, SETTINGS)
    assert raw.model == "pillow-scene-1"
    assert isinstance(raw.seed, int)
    assert render(spec).size == (spec.width, spec.height)


def test_same_spec_gives_identical_pixels_and_seed():
    spec = providers.storefront_spec("fashion", ["dress", "handbag", "shoes", "perfume"])
    first = local_image_gen.generate_image(spec, SETTINGS)
    second = local_image_gen.generate_image(spec, SETTINGS)
    assert first == second
    assert ImageChops.difference(render(spec), render(spec)).getbbox() is None
    assert ImageChops.difference(render(badge()), render(badge())).getbbox() is None


def test_seed_follows_the_prompt():
    one = local_image_gen.generate_image(providers.storefront_spec("tech", ["mouse"]), SETTINGS)
    other = local_image_gen.generate_image(providers.storefront_spec("tech", ["monitor"]), SETTINGS)
    assert one.seed != other.seed


def test_different_products_give_different_pixels():
    one = render(providers.storefront_spec("tech", ["mouse", "desktop", "monitor", "laptops"]))
    other = render(providers.storefront_spec("tech", ["phone", "speaker", "camera", "printer"]))
    assert ImageChops.difference(one, other).getbbox() is not None


def test_different_badges_give_different_pixels():
    assert ImageChops.difference(render(badge("First Sip")), render(badge("Last Sip"))).getbbox() is not None


def test_themes_have_their_own_palettes():
    products = ["mouse", "apple", "dress", "box"]
    means = {theme: ImageStat.Stat(render(providers.storefront_spec(theme, products))).mean
             for theme in ("tech", "food", "fashion", "garden", "music")}
    red, _green, blue = means["tech"]
    assert blue > red + 10  # cool
    red, _green, blue = means["food"]
    assert red > blue + 20  # warm
    themes = list(means)
    for i, a in enumerate(themes):
        for b in themes[i + 1:]:
            assert sum(abs(x - y) for x, y in zip(means[a], means[b], strict=True)) > 6, (a, b)


def colour_names(rgb: tuple[int, int, int]) -> set[str]:
    """The everyday names of a pixel's colour, by hue, saturation and brightness (a pixel may have none)."""
    hue, sat, val = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    hue *= 360
    names = set()
    if val < 0.22:
        names.add("black")
    if sat < 0.12 and val > 0.85:
        names.add("white")
    if sat > 0.5 and val > 0.3:
        for name, low, high in (("red", -15, 12), ("orange", 15, 38), ("gold", 38, 58), ("green", 90, 170),
                                ("blue", 200, 250)):
            if low <= (hue - 360 if hue >= 345 else hue) < high:
                names.add(name)
    if (hue >= 320 or hue < 10) and 0.15 < sat <= 0.6 and val > 0.75:
        names.add("pink")
    return names


def colour_shares(image: Image.Image) -> dict[str, float]:
    """The share of the picture's pixels each colour name covers."""
    small = image.reduce(4)
    data = small.tobytes()
    counts: dict[str, int] = {}
    for i in range(0, len(data), 3):
        for name in colour_names((data[i], data[i + 1], data[i + 2])):
            counts[name] = counts.get(name, 0) + 1
    return {name: count / (small.width * small.height) for name, count in counts.items()}


@pytest.mark.parametrize(
    ("occasion", "ground", "accent"),
    [
        ("Halloween", "orange", "black"),
        ("Valentine's Day", "pink", "red"),
        ("Christmas", "green", "red"),
        ("Christmas Eve", "green", "red"),
        ("Lunar New Year", "red", "gold"),
        ("Black Friday", "black", "gold"),
        ("Eid al-Fitr", "green", "gold"),
        ("St. Patrick's Day", "green", "white"),
    ],
)
def test_badges_wear_their_occasions_colours(occasion, ground, accent):
    """A badge tells its occasion at a glance: its ground colour fills most of it, its accent marks the medal."""
    shares = colour_shares(render(badge("Spooky Soju Sipper", occasion)))
    assert shares.get(ground, 0) > 0.4, shares
    assert shares.get(accent, 0) > 0.02, shares


def test_every_celebration_the_local_writer_knows_has_its_own_look():
    known = {look for _pattern, look in local_image_gen.BADGE_LOOKS}
    names = {name for year in (2025, 2026) for _day, name in celebrations._observances(year)}
    names |= celebrations.MAJOR
    names |= {name for pattern in local_achievement_gen.FLAVOURS for name in pattern.split("|")}
    for name in names:
        assert local_image_gen.badge_look(name) in known, name
    assert len({local_image_gen.badge_look(name).shape for name in names}) >= 12  # emblems differ too


def test_other_occasions_get_a_bright_look_of_their_own():
    one, other = local_image_gen.badge_look("Culture Day"), local_image_gen.badge_look("Hangeul Proclamation")
    assert one == local_image_gen.badge_look("Culture Day") and one != other
    assert one not in {look for _pattern, look in local_image_gen.BADGE_LOOKS}
    assert min(ImageStat.Stat(render(badge("Curious Culture Fan", "Culture Day"))).mean) > 80  # bright, not murky


@pytest.mark.parametrize("index", range(4))
def test_a_changed_product_changes_only_its_own_place(index):
    base = ["gift box", "apple", "bottle of soju", "laptop"]
    changed = list(base)
    changed[index] = "monitor"
    before = render(providers.storefront_spec("tech", base))
    after = render(providers.storefront_spec("tech", changed))
    by_place = difference_by_quadrant(before, after)
    place = providers.STOREFRONT_PLACES[index]
    assert by_place[place] > 0
    assert by_place[place] >= 0.98 * sum(by_place.values()), by_place


def test_products_fill_the_places_in_order():
    empty = render(providers.storefront_spec("food", []))
    products: list[str] = []
    for place, product in zip(providers.STOREFRONT_PLACES, ["apple", "soju", "coffee", "bread"], strict=True):
        products.append(product)
        by_place = difference_by_quadrant(empty, render(providers.storefront_spec("food", products)))
        filled = providers.STOREFRONT_PLACES[: len(products)]
        assert all(by_place[p] > 0 for p in filled), (place, by_place)
        assert all(by_place[p] == 0 for p in providers.STOREFRONT_PLACES if p not in filled), (place, by_place)


def test_long_badge_title_renders_at_the_right_size():
    spec = badge("Grand " * 16 + "Champ", "An occasion with a rather long name that goes on " * 4)
    assert len(spec.title) == 101
    assert render(spec).size == providers.BADGE_SIZE
    assert render(badge("x" * 100, "y" * 300)).size == providers.BADGE_SIZE


@pytest.mark.parametrize(
    "text",
    ["Supercalifragilisticexpialidocious" * 3, "Grand " * 17, "Soju 🍺 소주 " * 6, "W" * 100, ""],
)
def test_text_is_fitted_inside_its_box(text):
    canvas = Image.new("RGB", (800, 300), "white")
    box = (100, 100, 700, 200)
    local_image_gen._text(ImageDraw.Draw(canvas), text, box, (0, 0, 0), 80, lines=2, bold=True)
    ink = ImageChops.invert(canvas).getbbox()
    if text:
        assert ink is not None
        left, top, right, bottom = ink
        assert box[0] <= left and right <= box[2] and box[1] <= top and bottom <= box[3], ink


@pytest.mark.parametrize(
    "theme, products",
    [
        ("😀 emoji", ["🍺", "소주", "Café ☕ crème", "\u200d\u0301 \x00\ud800"]),
        ("Ωmega ショップ", ["a" * 500, " ", "", "\n\t"]),
        ("x" * 300, []),
    ],
)
def test_any_unicode_text_renders(theme, products):
    spec = providers.storefront_spec(theme, products)
    assert render(spec).size == providers.STOREFRONT_SIZE
    assert render(badge("🏆 " + theme, "\ud800" + theme)).size == providers.BADGE_SIZE


def test_impossible_size_is_a_provider_error():
    with pytest.raises(ProviderError):
        local_image_gen.generate_image(providers.ImageSpec("storefront", "p", 0, 100), SETTINGS)
