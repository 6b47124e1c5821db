"""Offline achievement writer: finds the celebration nearest a day and composes a gamified badge for a product."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.celebrations import nearest_celebration
from core.provider_types import AchievementDraft

if TYPE_CHECKING:
    from core.settings import Settings

NAME = "local"

# Occasion keywords (first match wins, so "lunar" comes before "new year") and the adjectives they flavour names with.
FLAVOURS = {
    "halloween": "Spooky Haunted Ghoulish Wicked Creepy Bewitched Phantom Moonlit",
    "valentine": "Lovestruck Smitten Sweetheart Cupid's Romantic Heartfelt Dreamy",
    "christmas|boxing": "Jolly Merry Festive Tinsel Snowy Yuletide Cosy Gift-Wrapped",
    "lunar|chuseok|mid-autumn": "Lucky Golden Lantern Prosperous Red-Envelope Fortunate",
    "new year": "Sparkling Countdown Midnight Fresh-Start Resolute Confetti Toasting",
    "singles": "Solo Self-Treating Savvy Double-Eleven Independent Single-Minded",
    "black friday|cyber": "Bargain-Hunting Doorbuster Deal-Savvy Cart-Filling Click-Happy",
    "thanksgiving": "Grateful Thankful Harvest Feasting Gobbling Cornucopia",
    "easter|good friday": "Egg-Hunting Springtime Bunny-Hopping Blossoming Pastel",
    "mother|father|children|aged": "Devoted Doting Beloved Heartwarming Treasured",
    "patrick": "Shamrock Emerald Lucky Green-Clad Leprechaun",
    "diwali|holi|eid|vesak|buddha|navami|janmashtami|guru": "Radiant Dazzling Luminous Colourful Blessed Glowing",
    "independence|national|republic|constitution|unity|liberation|foundation|bastille|armistice|veterans|memorial|"
    "victory|juneteenth|presidents": "Patriotic Proud Flag-Waving Stalwart Heroic Spirited",
    "labor|labour|may day": "Hard-Working Industrious Diligent Well-Rested Laid-Back",
}
DEFAULT_FLAVOUR = "Festive Jubilant Glorious Fabulous Legendary Brilliant Triumphant Merry".split()

PRODUCT_TYPES = {
    "alcoholic beverage": "soju sake beer ale lager wine champagne prosecco whisky whiskey vodka gin rum tequila "
    "mezcal cider baijiu brandy cognac liqueur mead makgeolli cocktail",
    "drink": "coffee tea latte espresso juice soda cola lemonade smoothie milk kombucha matcha",
    "electronics": "laptop computer pc phone smartphone iphone tablet ipad headphone headset earbud camera tv "
    "television console playstation xbox speaker monitor keyboard mouse charger smartwatch drone",
    "footwear": "shoe heel sneaker boot sandal slipper loafer trainer",
    "clothing": "shirt dress jacket coat hoodie sweater jumper jeans scarf hat cap skirt sock trousers pyjamas",
    "jewellery": "ring necklace bracelet earring watch pendant brooch",
    "cosmetics": "lipstick perfume mascara serum cream lotion makeup nail",
    "food": "chocolate cake candy cookie biscuit pizza cheese kimchi noodle ramen mooncake turkey pie bread sweet",
    "toy": "toy lego doll puzzle plush teddy game",
    "book": "book novel comic manga magazine",
    "home goods": "candle lamp mug pillow blanket vase plate sofa chair",
    "flowers": "rose flower bouquet tulip orchid lily",
    "sports equipment": "ball racket bike bicycle dumbbell ski skateboard surfboard",
}
KEYWORD_TYPES = {word: kind for kind, words in PRODUCT_TYPES.items() for word in words.split()}
ROLES = {
    "alcoholic beverage": "Sipper Toaster Taster Connoisseur Reveller",
    "drink": "Sipper Brewer Taster Barista",
    "electronics": "Techie Gadgeteer Geek Whiz Tinkerer",
    "footwear": "Strutter Stepper Trendsetter Stomper",
    "clothing": "Trendsetter Stylist Fashionista Dresser",
    "jewellery": "Dazzler Jeweller Sparkler",
    "cosmetics": "Glow-Getter Stylist Beautician",
    "food": "Foodie Gourmet Snacker Feaster Muncher",
    "toy": "Player Playmaker Kid-at-Heart",
    "book": "Bookworm Reader Page-Turner Scholar",
    "home goods": "Homemaker Nester Decorator",
    "flowers": "Florist Gardener Bloomer",
    "sports equipment": "Athlete Sportster Sprinter",
}
GENERIC_ROLES = (
    "Champion Collector Connoisseur Devotee Enthusiast Hero Hunter Legend Maestro Master Maven Virtuoso Aficionado "
    "Buff Guru Wizard Ace Pioneer"
).split()
TEMPLATES = (
    "{timing}, your {product} unlocked the {name} badge. Not every shopper marks {occasion} with such flair, so "
    "wear this title proudly. Share the badge with your friends, dare them to match your taste, and see who ends the "
    "season with the best collection.",
    "Your {product} turned {occasion} into something special, and the {name} badge is now yours. It honours "
    "shoppers who celebrate in style. Show it off: send the badge to your friends, invite them to find their own "
    "{occasion} treat, and compare achievements after the festivities.",
    "Legends are made {timing}, and your {product} just made you one. The {name} badge celebrates your excellent "
    "taste and festive spirit. Do not keep it to yourself: share it with your friends, tag the ones who deserve a "
    "treat too, and start a friendly race to the next achievement.",
    "{timing}, your {product} landed in the basket and earned you the {name} badge. It honours shoppers who make "
    "every celebration memorable. Pass the fun along: share the badge with your friends, ask about their {occasion} "
    "picks, and see whose collection shines brightest.",
)


def is_configured(settings: Settings) -> bool:
    """The local writer needs no key, so it is always available."""
    return True


def write_achievement(day: datetime.date, product: str, settings: Settings) -> AchievementDraft:
    """Compose an achievement for buying `product` around the celebration nearest `day`."""
    when, occasion = nearest_celebration(day)
    # Drop invisible characters except the joiner that holds emoji sequences together.
    text = "".join(c for c in " ".join(product.split()) if c.isprintable() or c == "\u200d").strip()
    if not any(c.isprintable() for c in text):
        text = "mystery gift"
    kind = _product_type(text)
    seed = hashlib.sha256(f"{occasion}\n{text}".encode()).digest()
    name = _name(occasion, text, kind, seed)
    description = TEMPLATES[seed[2] % len(TEMPLATES)].format(
        timing=_timing(when.toordinal() - day.toordinal(), occasion),
        product=_mention(text),
        occasion=occasion,
        name=name,
    )
    return AchievementDraft(name, description[0].upper() + description[1:], occasion, kind)


def _name(occasion: str, product: str, kind: str, seed: bytes) -> str:
    """Occasion-flavoured adjective + product + role noun, alliterating with the product where the lists allow."""
    shown = _display(product)
    letter = shown[:1].casefold()
    taken = shown.casefold().split()
    adjectives = [a for a in _flavour(occasion) if a.casefold() not in taken] or DEFAULT_FLAVOUR
    adjective = _pick(adjectives, letter, seed[0])
    # Keep "Legendary ... Legend" and the like from repeating a stem.
    roles, extra = (
        [r for r in group if r[:5].casefold() != adjective[:5].casefold()]
        for group in (ROLES[kind].split() if kind in ROLES else GENERIC_ROLES, GENERIC_ROLES)
    )
    return f"{adjective} {shown} {_pick(roles or GENERIC_ROLES, letter, seed[1], extra)}"


def _flavour(occasion: str) -> list[str]:
    lowered = occasion.casefold()
    return next(
        (w.split() for keys, w in FLAVOURS.items() if any(k in lowered for k in keys.split("|"))), DEFAULT_FLAVOUR
    )


def _pick(options: Sequence[str], letter: str, number: int, extra: Sequence[str] = ()) -> str:
    """Prefer a word that alliterates with the product; the hash byte chooses among the candidates."""
    alliterative = [w for w in (*options, *extra) if w[:1].casefold() == letter]
    choices = alliterative or list(options)
    return choices[number % len(choices)]


def _product_type(product: str) -> str:
    # The head noun of an English product phrase is usually last ("wine glass" is a glass), so search backwards.
    for token in reversed(re.findall(r"[^\W\d_]+", product.casefold())):
        # Plural to singular: shoes, dresses, candies, scarves.
        forms = (token, token[:-1], token[:-2], token[:-3] + "y", token[:-3] + "f") if token.endswith("s") else (token,)
        kind = next((KEYWORD_TYPES[f] for f in forms if f in KEYWORD_TYPES), None)
        if kind:
            return kind
    return _clip(product.casefold(), 40)


def _mention(product: str) -> str:
    """The product as the description names it, after 'your': no leading article, at most 6 words and 48 chars."""
    words = _without_article(product.split())
    return _clip(" ".join(words[:6]) + ("…" if len(words) > 6 else ""), 48)


def _display(product: str) -> str:
    """The product as it appears in the name: the last two words after any 'of', title-cased, at most 24 chars."""
    words = _without_article(re.split(r"\s+of\s+", product, flags=re.IGNORECASE)[-1].split())
    # Words that already carry capitals (iPhone, TV) are kept as the user wrote them.
    shown = " ".join(
        w if any(c.isupper() for c in w) else "-".join(p[:1].upper() + p[1:] for p in w.split("-")) for w in words[-2:]
    )
    return _clip(shown, 24)


def _without_article(words: list[str]) -> list[str]:
    return words[1:] if len(words) > 1 and words[0].casefold() in ("a", "an", "the") else words


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip() + "…"


def _timing(days: int, occasion: str) -> str:
    if days == 0:
        return f"on {occasion}"
    if days > 0:
        return f"{'in the run-up to' if days <= 7 else 'ahead of'} {occasion}"
    return f"{'just after' if days >= -7 else 'in the afterglow of'} {occasion}"
