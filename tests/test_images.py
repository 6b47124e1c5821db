"""Image delivery: /images/<sha256>.png, image_src in every answer, the S3 store (against an S3 server on
127.0.0.1), `flask images copy`, and removal of unused files that never races a writer."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import pytest
import requests
from sqlalchemy import select

from conftest import generate_storefronts
from models import Achievement, ImageFile, Storefront
from s3_server import object_keys, s3_bucket, s3_client, s3_endpoint  # noqa: F401 - fixtures

IMMUTABLE = "public, max-age=31536000, immutable"


def sha_of(src: str) -> str:
    assert src.startswith("/images/") and src.endswith(".png")
    return src.removeprefix("/images/").removesuffix(".png")


def test_images_route_sends_the_stored_png_immutably(app, client, achievement):
    sha256 = sha_of(achievement["image_src"])
    response = client.get(achievement["image_src"])
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert hashlib.sha256(response.data).hexdigest() == sha256
    assert response.data == app.extensions["image_store"].read(sha256)
    assert response.headers["ETag"] == f'"{sha256}"'
    assert response.headers["Cache-Control"] == IMMUTABLE
    assert response.headers["Content-Length"] == str(len(response.data))

    cached = client.get(achievement["image_src"], headers={"If-None-Match": f'"{sha256}"'})
    assert (cached.status_code, cached.data, cached.headers["ETag"]) == (304, b"", f'"{sha256}"')
    assert cached.headers["Cache-Control"] == IMMUTABLE


@pytest.mark.parametrize("name", ["0" * 64 + ".png", "A" * 64 + ".png", "abc.png", "0" * 64, "0" * 63 + ".png",
                                  "0" * 64 + ".jpg", "0" * 65 + ".png"])
def test_images_route_answers_image_not_found(client, name):
    response = client.get(f"/images/{name}")
    assert response.status_code == 404
    assert response.get_json()["code"] == "image_not_found"


def test_image_src_is_beside_every_image_url(client, users, achievement):
    made = generate_storefronts(client, users[0]["id"], "tech").get_json()["storefronts"]
    user_id = users[0]["id"]
    items = [
        achievement, *made,
        *client.get(f"/get-all-user-storefront-image?user_id={user_id}").get_json()["storefronts"],
        *client.get(f"/get-user-storefront-images?user_id={user_id}").get_json()["storefront_images"],
        *client.get("/view-all-achievement").get_json()["achievements"],
    ]
    client.post(f"/add-achievement?user_id={user_id}&achievement_id={achievement['id']}")
    items += client.get(f"/view-all-achievement-user?user_id={user_id}").get_json()["achievements"]
    assert len(items) == 6
    for item in items:
        compat = client.get(item["image_url"])
        assert client.get(item["image_src"]).data == compat.data
        assert compat.headers["ETag"] == f'"{sha_of(item["image_src"])}"'


def test_images_table_follows_rows_and_files(make_app):
    app = make_app(IMAGE_CACHE_TTL_S="0")  # no cache entry keeps the file
    client = app.test_client()
    client.post("/seed-specific")
    made = generate_storefronts(client, 1, "tech").get_json()["storefronts"]
    with app.extensions["sessionmaker"]() as session:
        assert list(session.scalars(select(ImageFile.sha256))) == [sha_of(made[0]["image_src"])]
    assert client.delete("/delete-all-storefronts").status_code == 200
    with app.extensions["sessionmaker"]() as session:
        assert list(session.scalars(select(ImageFile.sha256))) == []
    assert client.get(made[0]["image_src"]).status_code == 404


# --- S3 ----------------------------------------------------------------------------------------------------


@pytest.fixture
def s3_app(make_app, s3_endpoint, s3_bucket):  # noqa: F811 - fixtures
    return make_app(IMAGE_STORE_URL=f"s3://{s3_bucket}/pngs", S3_ENDPOINT_URL=s3_endpoint)


def test_s3_store_puts_by_hash_and_redirects_to_a_presigned_url(s3_app, s3_endpoint, s3_bucket):  # noqa: F811
    client = s3_app.test_client()
    made = client.post("/gen-achievement-image?date=31 Oct&product=soju").get_json()
    sha256 = sha_of(made["image_src"])
    key = f"pngs/{sha256[:2]}/{sha256}.png"
    assert object_keys(s3_endpoint, s3_bucket) == {key}
    stored = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=key)
    png = stored["Body"].read()
    assert hashlib.sha256(png).hexdigest() == sha256
    assert stored["ContentType"] == "image/png"

    response = client.get(made["image_src"])
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(f"{s3_endpoint}/{s3_bucket}/{key}?") and "Signature" in location
    download = requests.get(location, timeout=30)
    assert (download.status_code, download.content) == (200, png)
    assert client.get(f"/images/{'0' * 64}.png").status_code == 404

    compat = client.get(made["image_url"])  # the compat routes stream the bytes through
    assert (compat.status_code, compat.mimetype, compat.data) == (200, "image/png", png)
    assert compat.headers["ETag"] == f'"{sha256}"'
    inline = client.get(f"/view-achievement-image?achievement_id={made['id']}").get_json()["achievements"]
    assert base64.b64decode(inline) == png
    assert client.get("/healthz").get_json()["checks"]["image_dir"] == "ok"


def test_s3_redirects_to_the_public_base_url(make_app, s3_endpoint, s3_bucket):  # noqa: F811
    app = make_app(IMAGE_STORE_URL=f"s3://{s3_bucket}", S3_ENDPOINT_URL=s3_endpoint,
                   IMAGE_PUBLIC_BASE_URL="https://cdn.example/shop/")
    client = app.test_client()
    sha256 = sha_of(client.post("/gen-achievement-image?date=31 Oct&product=soju").get_json()["image_src"])
    response = client.get(f"/images/{sha256}.png")
    assert response.status_code == 302
    assert response.headers["Location"] == f"https://cdn.example/shop/{sha256[:2]}/{sha256}.png"
    assert response.headers["Cache-Control"] == IMMUTABLE


def test_s3_delete_all_removes_objects_no_row_uses(make_app, s3_endpoint, s3_bucket):  # noqa: F811
    # The image cache off: its entries would keep the storefronts' pictures.
    s3_app = make_app(IMAGE_STORE_URL=f"s3://{s3_bucket}/pngs", S3_ENDPOINT_URL=s3_endpoint, IMAGE_CACHE_TTL_S="0")
    client = s3_app.test_client()
    user_id = client.post("/seed-specific").get_json()["users"][0]["id"]
    storefronts = generate_storefronts(client, user_id, "all").get_json()["storefronts"]
    kept = client.post("/gen-achievement-image?date=31 Oct&product=soju").get_json()
    assert len(object_keys(s3_endpoint, s3_bucket)) == 4

    assert client.delete("/delete-all-storefronts").get_json()["deleted"] == 3
    sha256 = sha_of(kept["image_src"])
    assert object_keys(s3_endpoint, s3_bucket) == {f"pngs/{sha256[:2]}/{sha256}.png"}
    for item in storefronts:
        assert client.get(item["image_src"]).status_code == 404


def test_images_copy_is_idempotent(make_app, s3_endpoint, s3_bucket):  # noqa: F811
    app = make_app(S3_ENDPOINT_URL=s3_endpoint)  # images on disk; S3_ENDPOINT_URL says where the copy goes
    client, copier = app.test_client(), app.test_cli_runner()
    user_id = client.post("/seed-specific").get_json()["users"][0]["id"]
    generate_storefronts(client, user_id, "all")
    hashes = set(app.extensions["image_store"].hashes())
    assert len(hashes) == 3

    first = copier.invoke(args=["images", "copy", "--to", f"s3://{s3_bucket}/moved"])
    assert first.exit_code == 0, first.output
    assert "Copied 3 image(s); 0 already there." in first.output
    expected = {f"moved/{h[:2]}/{h}.png" for h in hashes}
    assert object_keys(s3_endpoint, s3_bucket) == expected
    for sha256 in hashes:
        body = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=f"moved/{sha256[:2]}/{sha256}.png")["Body"]
        assert body.read() == app.extensions["image_store"].read(sha256)

    again = copier.invoke(args=["images", "copy", "--to", f"s3://{s3_bucket}/moved"])
    assert again.exit_code == 0, again.output
    assert "Copied 0 image(s); 3 already there." in again.output
    assert object_keys(s3_endpoint, s3_bucket) == expected


# --- removal never races a writer ----------------------------------------------------------------------------

RACE_SECONDS = 3.0
WRITERS = 3


@pytest.fixture(params=["disk", "s3"])
def race_app(request, make_app):
    if request.param == "disk":
        return make_app()
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return make_app(IMAGE_STORE_URL=f"s3://{bucket}", S3_ENDPOINT_URL=endpoint)


def test_delete_all_never_leaves_a_row_without_its_file(race_app):
    """Writers store bytes that are already there (the seeder reuses its pictures) while DELETE
    /delete-all-storefronts runs again and again; whenever the remover is idle, every committed row has its file."""
    app, store = race_app, race_app.extensions["image_store"]
    assert app.test_client().post("/seed-specific").status_code == 201
    stop = threading.Event()
    failures: list[str] = []
    counts = {"writes": 0, "deletes": 0, "checks": 0}

    def write() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.post("/seedrandom", json={"users": 0, "achievements": 0, "storefronts": 1})
            if response.status_code != 201:
                failures.append(f"seedrandom answered {response.status_code}: {response.get_data(as_text=True)}")
                return
            counts["writes"] += 1

    def missing_files() -> list[str]:
        with app.extensions["sessionmaker"]() as session:
            hashes = set(session.scalars(select(Storefront.image_sha256))) | set(
                session.scalars(select(Achievement.image_sha256).where(Achievement.image_sha256.is_not(None))))
        return sorted(h for h in hashes if not store.exists(h))

    def remove() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.delete("/delete-all-storefronts")
            if response.status_code != 200:
                failures.append(f"delete answered {response.status_code}: {response.get_data(as_text=True)}")
                return
            counts["deletes"] += 1
            # Only this thread removes files, and it is between removals: a row without its file is the race.
            if missing := missing_files():
                failures.append(f"committed rows use missing files {missing}")
                return
            counts["checks"] += 1

    threads = [threading.Thread(target=write) for _ in range(WRITERS)] + [threading.Thread(target=remove)]
    for thread in threads:
        thread.start()
    # At least RACE_SECONDS, and on a loaded machine until the race has really run (or a minute has gone).
    started = time.monotonic()
    while not failures and time.monotonic() - started < 60 and (
            time.monotonic() - started < RACE_SECONDS or counts["writes"] <= 10 or counts["deletes"] <= 3):
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[0]
    assert counts["writes"] > 10 and counts["deletes"] > 3, counts
    assert missing_files() == []
