"""Demo data: the fixed users of /seed-specific, the bulk random data of /seedrandom, and the CLI."""

from __future__ import annotations

import pytest

from conftest import count_rows, image_files, png_size
from models import Achievement, Storefront, User
from seed import SPECIFIC_RECOMMENDATIONS


def test_seed_specific_users_and_recommendations(client, app):
    response = client.post("/seed-specific")
    assert response.status_code == 201
    body = response.get_json()
    assert body["message"] == "Database seeded with fake data"
    assert len(body["users"]) == 3
    expected = [
        {"tech": ["mouse", "desktop", "monitor", "laptops"], "food": ["soju", "whisky", "potato chips"],
         "fashion": ["high heels", "fur coats", "beautiful hats"]},
        {"tech": ["smartphone", "headphones", "gaming console", "tablet"],
         "food": ["sushi", "craft beer", "avocado toast"], "fashion": ["sneakers", "leather jackets", "sunglasses"]},
        {"tech": ["laptop", "fitness tracker", "e-book reader", "drone"], "food": ["pizza", "coffee", "smoothies"],
         "fashion": ["denim jeans", "sweatshirts", "wristwatches"]},
    ]
    assert SPECIFIC_RECOMMENDATIONS == expected
    for user, recommendations in zip(body["users"], expected, strict=True):
        assert user["name"]
        got = client.get(f"/get-recommendations?user_id={user['id']}").get_json()["recommendations"]
        assert list(got) == ["tech", "food", "fashion"]
        assert got == recommendations
    assert client.post("/seed-specific").get_json()["users"][0]["id"] == body["users"][-1]["id"] + 1


def test_seedrandom_defaults(client, app):
    response = client.post("/seedrandom")
    assert response.status_code == 201
    assert response.get_json() == {"message": "Database seeded with fake data", "users": 10, "achievements": 10,
                                   "storefronts": 10}
    assert (count_rows(app, User), count_rows(app, Achievement), count_rows(app, Storefront)) == (10, 10, 10)


def test_seedrandom_rows_are_well_formed_with_images(client, app):
    client.post("/seedrandom", json={"users": 5, "achievements": 8, "storefronts": 12})
    with app.extensions["sessionmaker"]() as session:
        users = session.query(User).all()
        for user in users:
            assert isinstance(user.recommendations, dict) and user.recommendations
            for theme, products in user.recommendations.items():
                assert isinstance(theme, str) and products and all(isinstance(p, str) for p in products)
        for storefront in session.query(Storefront).all():
            owner = session.get(User, storefront.user_id)
            assert storefront.style in owner.recommendations
            assert storefront.name == f"{owner.name}_{storefront.style}"
    files = image_files(app)
    assert files and len(files) < 8 + 12  # a few renders, reused across rows
    for item in client.get("/view-all-achievement").get_json()["achievements"]:
        image = client.get(item["image_url"])
        assert image.status_code == 200
        assert png_size(image.data) == (1024, 1024)
    some_user = client.get("/get-all-user-storefront-image?user_id=1").get_json()["storefronts"]
    for item in some_user:
        assert png_size(client.get(item["image_url"]).data) == (1024, 1024)


def test_seedrandom_storefronts_go_to_existing_users(client, app, users):
    response = client.post("/seedrandom", json={"users": 0, "achievements": 0, "storefronts": 6})
    assert response.status_code == 201
    assert count_rows(app, User) == 3
    assert count_rows(app, Storefront) == 6


def test_seedrandom_storefronts_without_users(client, app):
    response = client.post("/seedrandom", json={"users": 0, "storefronts": 1})
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_parameter"
    assert response.get_json()["field"] == "storefronts"
    assert count_rows(app, Achievement) == 0
    assert image_files(app) == set()


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"users": "5"}, "invalid_parameter", "users"),
        ({"users": None}, "invalid_parameter", "users"),
        ({"users": True}, "invalid_parameter", "users"),
        ({"users": 10.0}, "invalid_parameter", "users"),
        ({"users": -1}, "invalid_parameter", "users"),
        ({"achievements": 10001}, "invalid_parameter", "achievements"),
        ({"user": 5}, "invalid_parameter", "user"),
    ],
)
def test_seedrandom_bad_counts(client, app, body, code, field):
    response = client.post("/seedrandom", json=body)
    assert response.status_code == 400
    assert (response.get_json()["code"], response.get_json()["field"]) == (code, field)
    assert count_rows(app, User) == 0


@pytest.mark.parametrize("raw", ["[1]", "\"users\"", "{bad", "null", "5"])
def test_seedrandom_body_not_an_object(client, raw):
    response = client.post("/seedrandom", data=raw, content_type="application/json")
    assert (response.status_code, response.get_json()["code"]) == (400, "invalid_json")


def test_seedrandom_ignores_query_counts(client, app):
    client.post("/seedrandom?users=2", json={"users": 1, "achievements": 0, "storefronts": 0})
    assert count_rows(app, User) == 1


def test_cli_commands(runner, app):
    assert runner.invoke(args=["init-db"]).exit_code == 0
    result = runner.invoke(args=["seed-specific"])
    assert result.exit_code == 0, result.output
    assert count_rows(app, User) == 3
    result = runner.invoke(args=["seedrandom", "--users", "2", "--achievements", "1", "--storefronts", "3"])
    assert result.exit_code == 0, result.output
    assert (count_rows(app, User), count_rows(app, Achievement), count_rows(app, Storefront)) == (5, 1, 3)
