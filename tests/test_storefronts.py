"""Storefront routes: generation, listing, download and deletion, with rows and files kept together."""

from __future__ import annotations

import base64
from datetime import datetime

import pytest

from conftest import count_rows, generate_storefronts, image_files, immutable, png_size
from models import ImageFile, Storefront


def test_generate_one_theme(client, app, users):
    user = users[0]
    response = generate_storefronts(client, user["id"], "tech")
    assert response.status_code == 200
    body = response.get_json()
    assert body["user name"] == user["name"]
    assert body["recommendations"]["tech"] == ["mouse", "desktop", "monitor", "laptops"]
    assert "errors" not in body
    [made] = body["storefronts"]
    assert made["name"] == f"{user['name']}_tech"
    assert made["style"] == "tech"
    assert made["image_url"] == f"/download-user-storefront-image?user_id={user['id']}&storefront_id={made['id']}"
    assert count_rows(app, Storefront) == 1
    assert len(image_files(app)) == 1

    download = client.get(made["image_url"])
    assert download.status_code == 200
    assert download.mimetype == "image/png"
    assert png_size(download.data) == (1024, 1024)


def test_prompt_places_each_product(client, users):
    generate_storefronts(client, users[0]["id"], "tech")
    [item] = client.get(f"/get-all-user-storefront-image?user_id={users[0]['id']}").get_json()["storefronts"]
    prompt = item["description"]
    for product, place in [("mouse", "bottom left"), ("desktop", "top left"), ("monitor", "bottom right"),
                           ("laptops", "top right")]:
        assert f"a {product} at the {place}" in prompt
    for word in ("shop", "hoto-realistic", "minimal", "uncluttered"):
        assert word in prompt


def test_generate_all_themes_in_user_order(client, app, users):
    response = generate_storefronts(client, users[1]["id"], "all")
    assert response.status_code == 200
    made = response.get_json()["storefronts"]
    assert [item["style"] for item in made] == ["tech", "food", "fashion"]
    assert [item["id"] for item in made] == sorted(item["id"] for item in made)
    assert count_rows(app, Storefront) == 3
    assert len(image_files(app)) == 3


def test_theme_not_in_recommendations(client, app, users):
    response = generate_storefronts(client, users[0]["id"], "garden")
    assert response.status_code == 404
    assert response.get_json()["error"] == "Mismatch of Themes"
    assert response.get_json()["code"] == "theme_not_found"
    assert count_rows(app, Storefront) == 0
    assert image_files(app) == set()


@pytest.mark.parametrize(
    ("query", "status", "code", "field"),
    [
        ("shop_theme=tech", 400, "missing_parameter", "user_id"),
        ("user_id=&shop_theme=tech", 400, "missing_parameter", "user_id"),
        ("user_id=abc&shop_theme=tech", 400, "invalid_parameter", "user_id"),
        ("user_id=-1&shop_theme=tech", 400, "invalid_parameter", "user_id"),
        ("user_id=1.5&shop_theme=tech", 400, "invalid_parameter", "user_id"),
        ("user_id=0&shop_theme=tech", 400, "invalid_parameter", "user_id"),
        ("user_id=9223372036854775808&shop_theme=tech", 400, "invalid_parameter", "user_id"),
        ("user_id=1", 400, "missing_parameter", "shop_theme"),
        ("user_id=1&shop_theme=%20%20", 400, "missing_parameter", "shop_theme"),
        # Malformed and unknown at once: the parameter is reported, before any look-up.
        ("user_id=999&shop_theme=", 400, "missing_parameter", "shop_theme"),
    ],
)
def test_generate_bad_parameters(client, query, status, code, field):
    response = client.post(f"/gen-new-storefront-images?{query}")
    assert response.status_code == status
    assert response.get_json()["code"] == code
    assert response.get_json()["field"] == field


def test_generate_unknown_user(client):
    response = generate_storefronts(client, 9223372036854775807, "tech")
    assert response.status_code == 404
    assert response.get_json()["code"] == "user_not_found"


def test_generate_takes_json_body_and_query_wins(client, users):
    response = client.post("/gen-new-storefront-images", json={"user_id": users[0]["id"], "shop_theme": "food"})
    assert response.status_code == 200
    assert response.get_json()["storefronts"][0]["style"] == "food"
    response = client.post("/gen-new-storefront-images?shop_theme=fashion",
                           json={"user_id": str(users[0]["id"]), "shop_theme": "food"})
    assert response.get_json()["storefronts"][0]["style"] == "fashion"


def test_generate_bad_json_body(client, users):
    response = client.post("/gen-new-storefront-images", data="{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_json"
    response = client.post("/gen-new-storefront-images", json=[1, 2])
    assert response.get_json()["code"] == "invalid_json"


def test_list_storefront_images_with_bytes(client, users):
    user = users[0]
    generate_storefronts(client, user["id"], "tech")
    generate_storefronts(client, user["id"], "food")
    body = client.get(f"/get-user-storefront-images?user_id={user['id']}").get_json()
    assert body["user name"] == user["name"]
    assert "message" not in body
    first, second = body["storefront_images"]
    assert first["id"] < second["id"]
    assert (first["style"], second["style"]) == ("tech", "food")
    for item in (first, second):
        assert item["storefront_image_name"] == item["name"]
        assert png_size(base64.b64decode(item["storefront_image_binary"])) == (1024, 1024)
        assert datetime.fromisoformat(item["created_at"]).utcoffset().total_seconds() == 0
        assert item["created_at"].endswith("+00:00")
        assert item["description"]


def test_list_storefront_images_empty(client, users):
    response = client.get(f"/get-user-storefront-images?user_id={users[2]['id']}")
    assert response.status_code == 200
    assert response.get_json() == {
        "user name": users[2]["name"],
        "storefront_images": [],
        "message": "No storefront images found for this user",
    }


def test_list_storefronts_without_bytes(client, users):
    generate_storefronts(client, users[0]["id"], "tech")
    [item] = client.get(f"/get-all-user-storefront-image?user_id={users[0]['id']}").get_json()["storefronts"]
    assert set(item) >= {"id", "name", "description", "style", "storefront_image_name", "image_url", "created_at"}
    assert "storefront_image_binary" not in item
    assert client.get("/get-all-user-storefront-image?user_id=77").status_code == 404
    assert client.get("/get-user-storefront-images?user_id=77").get_json()["code"] == "user_not_found"


def test_download_checks_owner_and_supports_etag(client, users):
    made = generate_storefronts(client, users[0]["id"], "tech").get_json()["storefronts"][0]
    wrong_owner = client.get(f"/download-user-storefront-image?user_id={users[1]['id']}&storefront_id={made['id']}")
    assert wrong_owner.status_code == 404
    assert wrong_owner.get_json()["code"] == "storefront_not_found"
    unknown = client.get(f"/download-user-storefront-image?user_id={users[0]['id']}&storefront_id=999")
    assert unknown.get_json()["code"] == "storefront_not_found"

    first = client.get(made["image_url"])
    assert first.headers["ETag"]
    assert "max-age" in first.headers["Cache-Control"]
    assert first.headers["X-Content-Type-Options"] == "nosniff"
    again = client.get(made["image_url"], headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""


@pytest.fixture
def uncached(make_app):
    """A client of an app with the image cache off, whose cache entries would otherwise keep files."""
    client = make_app(IMAGE_CACHE_TTL_S="0").test_client()
    client.post("/seed-specific")
    return client


def test_delete_all_removes_rows_and_unused_files(uncached):
    client, app = uncached, uncached.application
    generate_storefronts(client, 1, "all")
    generate_storefronts(client, 2, "tech")
    assert len(image_files(app)) == 4
    response = client.delete("/delete-all-storefronts")
    assert response.status_code == 200
    assert response.get_json() == {"message": "All storefront entries deleted successfully", "deleted": 4,
                                   "files_removed": 4, "files_left": 0}
    assert count_rows(app, Storefront) == 0
    assert image_files(app) == set()
    assert client.delete("/delete-all-storefronts").get_json()["deleted"] == 0


def test_delete_all_whose_file_removal_fails_leaves_the_files_for_the_next(uncached):
    client, app = uncached, uncached.application
    generate_storefronts(client, 1, "all")
    files = image_files(app)
    assert len(files) == 3
    folders = {sorted(files)[0].parent}  # one file's folder refuses the removal (others may share it)
    blocked = {path for path in files if path.parent in folders}
    with immutable(*folders):
        response = client.delete("/delete-all-storefronts")
        assert response.status_code == 200
        assert response.get_json() == {"message": "All storefront entries deleted successfully", "deleted": 3,
                                       "files_removed": 3 - len(blocked), "files_left": len(blocked)}
        assert count_rows(app, Storefront) == 0
        assert image_files(app) == blocked  # no file forgotten: each still has its `images` row
        assert count_rows(app, ImageFile) == len(blocked)
    again = client.delete("/delete-all-storefronts")  # the folder takes removals again: the next call finishes
    assert again.get_json() == {"message": "All storefront entries deleted successfully", "deleted": 0,
                                "files_removed": len(blocked), "files_left": 0}
    assert image_files(app) == set()
    assert count_rows(app, ImageFile) == 0


def test_delete_keeps_files_an_achievement_shares(uncached):
    client, app = uncached, uncached.application
    client.post("/gen-achievement-image?date=31 Oct&product=soju")
    generate_storefronts(client, 1, "tech")
    assert len(image_files(app)) == 2
    client.delete("/delete-all-storefronts")
    assert len(image_files(app)) == 1
    achievement = client.get("/view-all-achievement").get_json()["achievements"][0]
    assert client.get(achievement["image_url"]).status_code == 200

