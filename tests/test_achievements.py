"""Achievement routes: generation, awarding, assigning, listing and images."""

from __future__ import annotations

import base64
from datetime import datetime

import pytest

from conftest import count_rows, image_files, png_size
from fakes import image_bytes
from models import Achievement, UserAchievement


def make_achievement(client, date="31 Oct", product="soju") -> dict:
    response = client.post("/gen-achievement-image", query_string={"date": date, "product": product})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_generate_achievement(client, app):
    body = make_achievement(client, "31 Oct", "soju")
    assert set(body) >= {"achievement_name", "description", "id", "occasion", "product_type", "image_url"}
    assert body["occasion"] == "Halloween"
    assert "soju" in body["description"].lower()
    assert body["image_url"] == f"/get-achievement-image?achievement_id={body['id']}"
    assert count_rows(app, Achievement) == 1
    assert len(image_files(app)) == 1
    image = client.get(body["image_url"])
    assert image.status_code == 200
    assert image.mimetype == "image/png"
    assert png_size(image.data) == (1024, 1024)  # square, as badges are everywhere


@pytest.mark.parametrize("date", ["05 Oct", "5th of October", "October 5", "2024-10-05", "October 5th", "5 Oct 2024",
                                  "SEPT 3", "oct 05", "1st of jan"])
def test_generate_accepts_day_forms(client, date):
    make_achievement(client, date)


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ({"product": "soju"}, "missing_parameter", "date"),
        ({"date": "", "product": "soju"}, "missing_parameter", "date"),
        ({"date": "05/10", "product": "soju"}, "invalid_parameter", "date"),
        ({"date": "20241005", "product": "soju"}, "invalid_parameter", "date"),
        ({"date": "2024/10/05", "product": "soju"}, "invalid_parameter", "date"),
        ({"date": "31 Apr", "product": "soju"}, "invalid_parameter", "date"),
        ({"date": "2023-02-29", "product": "soju"}, "invalid_parameter", "date"),
        ({"date": "tomorrow", "product": "soju"}, "invalid_parameter", "date"),
        ({"date": "05 Oct"}, "missing_parameter", "product"),
        ({"date": "05 Oct", "product": "   "}, "missing_parameter", "product"),
        ({"date": "05 Oct", "product": "x" * 101}, "invalid_parameter", "product"),
        ({"date": "nonsense", "product": ""}, "invalid_parameter", "date"),
    ],
)
def test_generate_bad_parameters(client, app, query, code, field):
    response = client.post("/gen-achievement-image", query_string=query)
    assert response.status_code == 400
    assert response.get_json()["code"] == code
    assert response.get_json()["field"] == field
    assert count_rows(app, Achievement) == 0
    assert image_files(app) == set()


def test_generate_trims_product_and_takes_json_null_as_missing(client):
    body = make_achievement(client, "14 Feb", "  " + "y" * 100 + "  ")
    assert body["occasion"] == "Valentine's Day"
    response = client.post("/gen-achievement-image", json={"date": "14 Feb", "product": None})
    assert response.get_json()["code"] == "missing_parameter"


def test_add_achievement_once(client, app, users):
    achievement = make_achievement(client)
    url = f"/add-achievement?user_id={users[0]['id']}&achievement_id={achievement['id']}"
    first = client.post(url)
    assert first.status_code == 201
    assert first.get_json() == {"message": "Successfully attributed user to achievement"}
    again = client.post(url)
    assert again.status_code == 200
    assert "message" in again.get_json()
    assert count_rows(app, UserAchievement) == 1


def test_add_achievement_unknowns(client, users):
    achievement = make_achievement(client)
    response = client.post(f"/add-achievement?user_id=999&achievement_id={achievement['id']}")
    assert (response.status_code, response.get_json()["code"]) == (404, "user_not_found")
    response = client.post(f"/add-achievement?user_id={users[0]['id']}&achievement_id=999")
    assert (response.status_code, response.get_json()["code"]) == (404, "achievement_not_found")
    response = client.post("/add-achievement?user_id=999&achievement_id=998")
    assert response.get_json()["code"] == "user_not_found"
    response = client.post("/add-achievement?user_id=999&achievement_id=x")
    assert (response.status_code, response.get_json()["field"]) == (400, "achievement_id")


def test_view_all_achievements_and_paging(client):
    ids = [make_achievement(client, f"{day} Mar", f"product {day}")["id"] for day in range(1, 6)]
    items = client.get("/view-all-achievement").get_json()["achievements"]
    assert [item["id"] for item in items] == ids
    for item in items:
        assert set(item) >= {"name", "description", "id", "occasion", "product_type", "image_url", "created_at"}
        assert datetime.fromisoformat(item["created_at"]).utcoffset().total_seconds() == 0
    page = client.get("/view-all-achievement?limit=2&offset=1").get_json()["achievements"]
    assert [item["id"] for item in page] == ids[1:3]
    assert client.get("/view-all-achievement?offset=4").get_json()["achievements"][0]["id"] == ids[4]
    for bad in ("limit=0", "limit=1001", "limit=-1", "offset=-1", "limit=abc", "offset=1.0", "limit="):
        response = client.get(f"/view-all-achievement?{bad}")
        assert response.status_code == 400, bad
        assert response.get_json()["field"] == bad.split("=")[0]


def test_a_badge_made_wide_before_keeps_its_file(client, app):
    """Badges stored before badges were square (1344x576) are served as they were stored."""
    wide = image_bytes((1344, 576))
    with app.extensions["sessionmaker"]() as session, app.extensions["image_store"].saving(session) as put:
        row = Achievement(name="Old", description="An old badge", occasion="Halloween", product_type="soju",
                          **put(wide).columns())
        session.add(row)
    [achievement] = client.get("/view-all-achievement").get_json()["achievements"]
    assert client.get(achievement["image_url"]).data == wide
    assert client.get(achievement["image_src"]).data == wide


def test_view_achievement_image_base64(client):
    achievement = make_achievement(client)
    body = client.get(f"/view-achievement-image?achievement_id={achievement['id']}").get_json()
    assert png_size(base64.b64decode(body["achievements"])) == (1024, 1024)
    assert client.get("/view-achievement-image?achievement_id=42").get_json()["code"] == "achievement_not_found"
    assert client.get("/get-achievement-image?achievement_id=42").status_code == 404


def test_view_achievement_image_feeds_the_first_front_ends_popup(client):
    """Its achievement icon shows `response.data.name` and `.description` beside the image from `achievements`."""
    achievement = make_achievement(client)
    response = client.get(f"/view-achievement-image?achievement_id={achievement['id']}")
    data = response.get_json()  # what axios puts in `response.data`
    assert data["name"] == achievement["achievement_name"] and data["name"]
    assert data["description"] == achievement["description"] and data["description"]
    assert png_size(base64.b64decode(data["achievements"])) == (1024, 1024)
    listed = client.get("/view-all-achievement").get_json()["achievements"][0]
    assert {key: data[key] for key in listed} == listed  # id, occasion, product_type, image_url, created_at too


def test_achievement_without_image(client, app):
    with app.extensions["sessionmaker"]() as session:
        achievement = Achievement(name="n", description="d", occasion="o", product_type="p")
        session.add(achievement)
        session.commit()
        achievement_id = achievement.id
    listed = client.get("/view-all-achievement").get_json()["achievements"]
    assert listed[0]["image_url"] is None
    for route in ("/view-achievement-image", "/get-achievement-image"):
        response = client.get(f"{route}?achievement_id={achievement_id}")
        assert (response.status_code, response.get_json()["code"]) == (404, "achievement_not_found")


def test_achievement_image_etag(client):
    achievement = make_achievement(client)
    first = client.get(achievement["image_url"])
    assert first.headers["Cache-Control"]
    second = client.get(achievement["image_url"], headers={"If-None-Match": first.headers["ETag"]})
    assert second.status_code == 304


def test_assign_replaces_set(client, users):
    ids = [make_achievement(client, f"{day} May", "tea")["id"] for day in (1, 2, 3)]
    user_id = users[0]["id"]
    response = client.post("/assign-achievements-to-user",
                           query_string={"user_id": user_id, "achievement_list": f"[{ids[2]},{ids[0]},{ids[2]}]"})
    assert response.status_code == 200
    assert response.get_json() == {"message": "Achievements assigned to user", "achievement_ids": [ids[0], ids[2]]}
    held = client.get(f"/view-all-achievement-user?user_id={user_id}").get_json()["achievements"]
    assert [item["id"] for item in held] == [ids[0], ids[2]]
    assert set(held[0]) >= {"name", "description", "id", "occasion", "product_type", "image_url", "created_at"}

    response = client.post("/assign-achievements-to-user", json={"user_id": user_id, "achievement_list": [ids[1]]})
    assert response.get_json()["achievement_ids"] == [ids[1]]
    client.post("/assign-achievements-to-user", query_string={"user_id": user_id, "achievement_list": "[]"})
    assert client.get(f"/view-all-achievement-user?user_id={user_id}").get_json()["achievements"] == []


def test_assign_unknown_ids_changes_nothing(client, users):
    known = make_achievement(client)["id"]
    user_id = users[0]["id"]
    client.post("/assign-achievements-to-user", query_string={"user_id": user_id, "achievement_list": f"[{known}]"})
    response = client.post("/assign-achievements-to-user",
                           query_string={"user_id": user_id, "achievement_list": f"[{known}, 99, 98, 99]"})
    assert response.status_code == 404
    assert response.get_json()["code"] == "achievement_not_found"
    assert response.get_json()["unknown_ids"] == [98, 99]
    held = client.get(f"/view-all-achievement-user?user_id={user_id}").get_json()["achievements"]
    assert [item["id"] for item in held] == [known]
    response = client.post("/assign-achievements-to-user", query_string={"user_id": 555, "achievement_list": "[99]"})
    assert response.get_json()["code"] == "user_not_found"


@pytest.mark.parametrize(
    "value", ["", "1", "[1, 'a']", "[0]", "[-1]", "[1.0]", "[true]", "[null]", "{}", "[9223372036854775808]",
              "not json", "[[1]]", '"[1]"'],
)
def test_assign_bad_lists(client, users, value):
    response = client.post("/assign-achievements-to-user",
                           query_string={"user_id": users[0]["id"], "achievement_list": value})
    assert response.status_code == 400
    assert response.get_json()["field"] == "achievement_list"
    expected = "missing_parameter" if value == "" else "invalid_parameter"
    assert response.get_json()["code"] == expected


def test_assign_string_in_json_body_is_invalid(client, users):
    response = client.post("/assign-achievements-to-user", json={"user_id": users[0]["id"], "achievement_list": "[1]"})
    assert (response.status_code, response.get_json()["code"]) == (400, "invalid_parameter")


def test_view_all_achievement_user_unknown(client):
    response = client.get("/view-all-achievement-user?user_id=3")
    assert (response.status_code, response.get_json()["code"]) == (404, "user_not_found")


def test_recommendations(client, users):
    body = client.get(f"/get-recommendations?user_id={users[2]['id']}").get_json()
    assert body == {"recommendations": {
        "tech": ["laptop", "fitness tracker", "e-book reader", "drone"],
        "food": ["pizza", "coffee", "smoothies"],
        "fashion": ["denim jeans", "sweatshirts", "wristwatches"],
    }}
    assert client.get("/get-recommendations?user_id=404").get_json()["code"] == "user_not_found"
    assert client.get(f"/get-recommendations?user_id=000{users[0]['id']}").status_code == 200
