"""What every route shares: the JSON error shape, the admin token, CORS, size limits and start-up checks."""

from __future__ import annotations

import os

import pytest

from core.errors import ConfigError
from main import create_app

ADMIN_ROUTES = [("delete", "/delete-all-storefronts"), ("post", "/seed-specific"), ("post", "/seedrandom")]


def test_unknown_path_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["code"] == "not_found"
    assert response.get_json()["error"]


def test_wrong_method_is_json_405(client):
    response = client.get("/seed-specific")
    assert response.status_code == 405
    assert response.get_json()["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_body_too_large_is_json_413(make_app):
    client = make_app(MAX_REQUEST_BYTES="100").test_client()
    response = client.post("/seedrandom", json={"users": 1, "padding": "x" * 200})
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"
    response = client.delete("/delete-all-storefronts", data="x" * 200)
    assert response.status_code == 413


def test_unexpected_error_is_json_500_without_detail(app):
    def explode():
        raise RuntimeError("secret internals")

    app.add_url_rule("/explode", view_func=explode)
    response = app.test_client().get("/explode")
    assert response.status_code == 500
    assert response.get_json() == {"error": "The server hit an unexpected error.", "code": "internal_error"}


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_need_token_when_set(make_app, method, path):
    client = make_app(ADMIN_TOKEN="s3cret").test_client()
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthorized"
    assert getattr(client, method)(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert getattr(client, method)(path, headers={"Authorization": "Basic s3cret"}).status_code == 401
    ok = getattr(client, method)(path, headers={"Authorization": "bearer s3cret"})
    assert ok.status_code in (200, 201)


def test_token_checked_before_parameters(make_app):
    client = make_app(ADMIN_TOKEN="s3cret").test_client()
    response = client.post("/seedrandom", json={"users": "many"})
    assert response.status_code == 401


def test_admin_routes_open_without_token(client):
    assert client.post("/seed-specific").status_code == 201


def test_cors_preflight_needs_no_token(make_app):
    client = make_app(ADMIN_TOKEN="s3cret", CORS_ORIGINS="https://shop.example").test_client()
    response = client.options("/delete-all-storefronts", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "DELETE",
        "Access-Control-Request-Headers": "Authorization"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    other = client.get("/view-all-achievement", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_every_origin_by_default(client):
    response = client.get("/view-all-achievement", headers={"Origin": "https://anywhere.example"})
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://anywhere.example")


def test_a_request_without_origin_gets_what_a_cache_needs(make_app):
    """Requests that ask for no CORS (an <img>, a server) skip flask-cors: with every origin allowed they get its
    `*` and exposed headers all the same; with a list of origins only `Vary: Origin`, so that a shared cache keeps
    their answer apart from a browser's cross-origin call, which still gets its origin back."""
    anyone = make_app().test_client().get("/view-all-achievement")
    assert anyone.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Request-ID" in anyone.headers["Access-Control-Expose-Headers"]
    listed = make_app(CORS_ORIGINS="https://shop.example,https://admin.example").test_client()
    plain = listed.get("/view-all-achievement")
    assert "Access-Control-Allow-Origin" not in plain.headers
    assert "Origin" in plain.vary
    browser = listed.get("/view-all-achievement", headers={"Origin": "https://admin.example"})
    assert browser.headers["Access-Control-Allow-Origin"] == "https://admin.example"
    assert "Origin" in browser.vary


@pytest.mark.parametrize(("name", "value"), [("PORT", "x"), ("STABILITY_ENGINE", "foo"), ("IMAGE_PROVIDER", "dall-e"),
                                             ("PROVIDER_RETRIES", "-1"), ("GENERATION_RATE_LIMIT", "lots"),
                                             ("RATELIMIT_STORAGE_URI", "redsi://cache:6379"),
                                             ("RATELIMIT_FAIL_OPEN", "maybe"), ("JOB_RETENTION_DAYS", "0")])
def test_unusable_setting_stops_start_up(make_app, name, value):
    with pytest.raises(ConfigError, match=name):
        make_app(**{name: value})


def test_production_needs_admin_token(tmp_path):
    with pytest.raises(SystemExit, match="ADMIN_TOKEN"):
        create_app({"TESTING": True, "APP_ENV": "production", "DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("ADMIN_TOKEN=from-file\nIMAGE_DIR=from-file-images\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGE_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/a.db")
    app = create_app()
    try:
        assert app.extensions["settings"].admin_token == "from-file"
        assert str(app.extensions["settings"].image_dir) == str(tmp_path / "from-env")
    finally:
        os.environ.pop("ADMIN_TOKEN", None)  # load_dotenv wrote it behind monkeypatch's back


def test_generation_rate_limit_per_route(make_app):
    client = make_app(GENERATION_RATE_LIMIT="2/minute").test_client()
    for _ in range(2):
        assert client.post("/gen-achievement-image").status_code == 400  # counted even when malformed
    limited = client.post("/gen-achievement-image")
    assert limited.status_code == 429
    assert limited.get_json()["code"] == "rate_limited"
    assert limited.get_json()["error"].startswith("Too many requests to this route")
    assert int(limited.headers["Retry-After"]) > 0
    # The other generating route has a count of its own; other routes none.
    assert client.post("/gen-new-storefront-images").status_code == 400
    for _ in range(5):
        assert client.get("/view-all-achievement").status_code == 200


def test_no_rate_limit_by_default(client):
    for _ in range(40):
        assert client.post("/gen-achievement-image").status_code == 400


def test_trusted_hosts_answer_any_other_host_with_json_400(make_app):
    client = make_app(TRUSTED_HOSTS="api.shop.example, .cdn.example, 127.0.0.1").test_client()
    for host in ("api.shop.example", "API.Shop.Example", "api.shop.example:8443", "img.cdn.example", "127.0.0.1:5000"):
        assert client.get("/view-all-achievement", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "api.shop.example.evil.example", "shop.example", "localhost"):
        response = client.get("/view-all-achievement", headers={"Host": host})
        assert response.status_code == 400, host
        assert response.get_json() == {"error": f"Host '{host}' is not trusted.", "code": "bad_request"}
    assert make_app().test_client().get("/view-all-achievement", headers={"Host": "any.example"}).status_code == 200


@pytest.mark.parametrize("value", ["https://api.shop.example", "api.shop.example/path", "a b"])
def test_trusted_hosts_must_be_host_names(make_app, value):
    with pytest.raises(ConfigError, match="TRUSTED_HOSTS"):
        make_app(TRUSTED_HOSTS=value)
