"""Demo data: the three fixed users of `/seed-specific`, random bulk data for `/seedrandom`, and CLI commands."""

from __future__ import annotations

import random
from datetime import date, timedelta
from functools import lru_cache

import click
from faker import Faker
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from core import schema
from core.errors import InvalidParameter
from core.image_store import ImageStore
from core.settings import Settings
from models import Achievement, Storefront, User
from providers import AchievementDraft, Generator, badge_spec, storefront_spec

SPECIFIC_RECOMMENDATIONS = [
    {
        "tech": ["mouse", "desktop", "monitor", "laptops"],
        "food": ["soju", "whisky", "potato chips"],
        "fashion": ["high heels", "fur coats", "beautiful hats"],
    },
    {
        "tech": ["smartphone", "headphones", "gaming console", "tablet"],
        "food": ["sushi", "craft beer", "avocado toast"],
        "fashion": ["sneakers", "leather jackets", "sunglasses"],
    },
    {
        "tech": ["laptop", "fitness tracker", "e-book reader", "drone"],
        "food": ["pizza", "coffee", "smoothies"],
        "fashion": ["denim jeans", "sweatshirts", "wristwatches"],
    },
]

PRODUCTS_BY_THEME = {
    "tech": ["mouse", "monitor", "laptop", "smartphone", "headphones", "tablet", "drone", "smartwatch", "keyboard"],
    "food": ["soju", "whisky", "sushi", "coffee", "pizza", "craft beer", "matcha", "dumplings", "chocolate"],
    "fashion": ["sneakers", "sunglasses", "denim jeans", "high heels", "scarf", "wristwatch", "handbag", "hoodie"],
    "home": ["scented candle", "throw pillow", "table lamp", "houseplant", "coffee mug", "wall clock"],
    "sports": ["yoga mat", "football", "running shoes", "dumbbells", "tennis racket", "water bottle"],
    "beauty": ["lipstick", "face serum", "perfume", "nail polish", "sheet mask", "hair dryer"],
}
# The seeder renders this many distinct badges and reuses them, so 10,000 rows take seconds.
SEED_BADGES = 6


def seed_specific(session: Session) -> list[User]:
    """Add the three demo users, with fake names and the fixed recommendations of the contract."""
    fake = Faker()
    users = [User(name=fake.name(), recommendations=recommendations) for recommendations in SPECIFIC_RECOMMENDATIONS]
    session.add_all(users)
    session.commit()
    return users


def fake_names(fake: Faker, rng: random.Random, count: int) -> list[str]:
    """`count` full names, mixed from a few hundred Faker names (Faker's `name()` costs ~0.1 ms each)."""
    firsts = [fake.first_name() for _ in range(min(count, 300))]
    lasts = [fake.last_name() for _ in range(min(count, 300))]
    return [f"{rng.choice(firsts)} {rng.choice(lasts)}" for _ in range(count)]


def random_recommendations(rng: random.Random) -> dict[str, list[str]]:
    """Two to four themes, each with three or four of its products."""
    themes = rng.sample(sorted(PRODUCTS_BY_THEME), rng.randint(2, 4))
    return {theme: rng.sample(PRODUCTS_BY_THEME[theme], rng.randint(3, 4)) for theme in themes}


def seed_random(session: Session, store: ImageStore, users: int, achievements: int, storefronts: int) -> None:
    """Insert random users, achievements and storefronts in bulk; rows share a few rendered images."""
    rng = random.Random()
    fake = Faker()
    names = fake_names(fake, rng, users)
    user_rows = [{"name": name, "recommendations": random_recommendations(rng)} for name in names]
    with store.saving(session) as put:
        if user_rows:
            ids = list(session.scalars(insert(User).returning(User.id, sort_by_parameter_order=True), user_rows))
            owners = [(i, row["name"], row["recommendations"]) for i, row in zip(ids, user_rows, strict=True)]
        elif storefronts:
            owners = [(u.id, u.name, u.recommendations) for u in session.scalars(select(User)) if u.recommendations]
        else:
            owners = []
        if storefronts and not owners:
            raise InvalidParameter("storefronts", "Storefronts need users: seed users too, or seed-specific first.")

        if achievements:
            badges = [seed_badge(index) for index in range(min(SEED_BADGES, achievements))]
            stored = [put(png).columns() for _draft, png in badges]
            rows = []
            for index in range(achievements):
                draft, _png = badges[index % len(badges)]
                rows.append({"name": draft.name, "description": draft.description, "occasion": draft.occasion,
                             "product_type": draft.product_type, **stored[index % len(badges)]})
            session.execute(insert(Achievement), rows)

        if storefronts:
            rows, stored_by_theme = [], {}
            for _ in range(storefronts):
                user_id, name, recommendations = rng.choice(owners)
                theme = rng.choice(sorted(recommendations))
                prompt, png = seed_storefront(theme)
                if theme not in stored_by_theme:  # hashing and checking 1 MB per row was most of the time
                    stored_by_theme[theme] = put(png).columns()
                rows.append({"user_id": user_id, "name": f"{name}_{theme}", "description": prompt, "style": theme,
                             **stored_by_theme[theme]})
            session.execute(insert(Storefront), rows)


@lru_cache(maxsize=32)
def seed_storefront(theme: str) -> tuple[str, bytes]:
    """The prompt and local rendering of one demo storefront per theme, made once per process."""
    products = PRODUCTS_BY_THEME.get(theme, [theme])[:4]
    spec = storefront_spec(theme, products)
    image = Generator(Settings(image_provider="local")).generate_image(spec)
    return spec.prompt, image.png


@lru_cache(maxsize=SEED_BADGES)
def seed_badge(index: int) -> tuple[AchievementDraft, bytes]:
    """One demo achievement and its badge, written and drawn by the local providers, made once per process."""
    generator = Generator(Settings(image_provider="local", text_provider="local"))
    themes = sorted(PRODUCTS_BY_THEME)
    products = PRODUCTS_BY_THEME[themes[index % len(themes)]]
    day = date(2026, 1, 1) + timedelta(days=(index * 61) % 365)
    draft = generator.write_achievement(day, products[index % len(products)])
    return draft, generator.generate_image(badge_spec(draft)).png


def register_commands(app) -> None:
    """Add `flask init-db`, `flask seed-specific` and `flask seedrandom` to the app's CLI."""

    def session_and_store():
        return app.extensions["sessionmaker"](), app.extensions["image_store"]

    @app.cli.command("init-db")
    def init_db() -> None:
        """Upgrade the database to the latest migration."""
        schema.upgrade(app.extensions["settings"].database_url)
        click.echo("Database ready.")

    @app.cli.command("seed-specific")
    def seed_specific_command() -> None:
        """Add the three demo users."""
        session, _store = session_and_store()
        with session:
            for user in seed_specific(session):
                click.echo(f"user {user.id}: {user.name}")

    @app.cli.command("seedrandom")
    @click.option("--users", default=10, type=click.IntRange(0, 10_000), show_default=True)
    @click.option("--achievements", default=10, type=click.IntRange(0, 10_000), show_default=True)
    @click.option("--storefronts", default=10, type=click.IntRange(0, 10_000), show_default=True)
    def seed_random_command(users: int, achievements: int, storefronts: int) -> None:
        """Add random users, achievements and storefronts."""
        session, store = session_and_store()
        with session:
            try:
                seed_random(session, store, users, achievements, storefronts)
            except InvalidParameter as error:
                raise click.ClickException(error.message) from None
        click.echo(f"Seeded {users} users, {achievements} achievements, {storefronts} storefronts.")
