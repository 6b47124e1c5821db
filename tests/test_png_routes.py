"""The two PNG routes on their lean path: bytes, headers, 304s and which 404 a client gets."""

from __future__ import annotations

import hashlib

import pytest

from conftest import image_files


@pytest.fixture
def storefront(client, users) -> dict:
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech")
    assert response.status_code == 200
    return response.get_json()["storefronts"][0]


@pytest.mark.parametrize("made", ["storefront", "achievement"])
def test_png_is_the_stored_file_with_its_hash_as_etag(request, app, made):
    url = request.getfixturevalue(made)["image_url"]
    response = app.test_client().get(url)
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    digest = hashlib.sha256(response.data).hexdigest()
    assert {path.name for path in image_files(app)} >= {f"{digest}.png"}
    assert response.headers["ETag"] == f'"{digest}"'
    assert response.headers["Content-Length"] == str(len(response.data))
    assert response.headers["Cache-Control"] == "public, max-age=3600"

    head = app.test_client().head(url)
    assert (head.status_code, head.data, head.headers["ETag"]) == (200, b"", response.headers["ETag"])


@pytest.mark.parametrize("if_none_match", ['"{digest}"', 'W/"{digest}"', '"other", "{digest}"', "*"])
def test_matching_if_none_match_gets_304_with_the_cache_headers(client, storefront, if_none_match):
    first = client.get(storefront["image_url"])
    digest = first.headers["ETag"].strip('"')
    again = client.get(storefront["image_url"], headers={"If-None-Match": if_none_match.format(digest=digest)})
    assert (again.status_code, again.data) == (304, b"")
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Cache-Control"] == first.headers["Cache-Control"]


def test_other_etag_gets_the_png(client, storefront):
    response = client.get(storefront["image_url"], headers={"If-None-Match": '"not-this-one"'})
    assert response.status_code == 200 and response.data


def test_download_names_the_unknown_user_before_the_storefront(client, users, storefront):
    unknown_user = client.get(f"/download-user-storefront-image?user_id=999&storefront_id={storefront['id']}")
    assert (unknown_user.status_code, unknown_user.get_json()["code"]) == (404, "user_not_found")
    both_unknown = client.get("/download-user-storefront-image?user_id=999&storefront_id=998")
    assert both_unknown.get_json()["code"] == "user_not_found"


def test_a_missing_file_is_404_not_500(app, client, storefront, achievement):
    for path in image_files(app):
        path.unlink()
    for url, code in ((storefront["image_url"], "storefront_not_found"),
                      (achievement["image_url"], "achievement_not_found")):
        response = client.get(url)
        assert (response.status_code, response.get_json()["code"]) == (404, code)


def test_unknown_achievement_image_is_404(client):
    response = client.get("/get-achievement-image?achievement_id=12345")
    assert (response.status_code, response.get_json()["code"]) == (404, "achievement_not_found")


def test_listed_achievements_match_the_single_form(client, achievement):
    [listed] = client.get("/view-all-achievement").get_json()["achievements"]
    single = {key: value for key, value in achievement.items() if key not in ("achievement_name", "cached", "job_id")}
    assert listed == single
