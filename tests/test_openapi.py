"""The OpenAPI document: valid, describing exactly the app's routes, served with an offline Swagger UI."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import jsonschema_rs
import pytest
import responses
import schemathesis
from schemathesis.specs.openapi.definitions import OPENAPI_31

from api_docs import OPENAPI_PATH, load_openapi
from fakes import STABILITY_CORE_URL, STABILITY_KEY

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def document() -> dict:
    return load_openapi()


def app_operations(app) -> dict[tuple[str, str], str]:
    """(method, OpenAPI path) to view name, for every route of the app."""
    operations = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        # Flask answers HEAD for every GET and OPTIONS (CORS preflight) for every route by itself.
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operations[(method.lower(), path)] = rule.endpoint.rpartition(".")[2]
    return operations


def document_operations(document: dict) -> dict[tuple[str, str], dict]:
    return {(method, path): operation for path, item in document["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS}


def resolve(document: dict, node: dict) -> dict:
    """Follow `$ref`s to the node they name."""
    while "$ref" in node:
        target = document
        for part in ref_parts(node["$ref"]):
            target = target[part]
        node = target
    return node


def ref_parts(ref: str) -> list[str]:
    assert ref.startswith("#/"), ref
    return [part.replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/")]


def walk(node, key=None):
    """Every (key, value) pair of a JSON document, depth first."""
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield child_key, child
            yield from walk(child, child_key)
    elif isinstance(node, list):
        for child in node:
            yield from walk(child, key)


def test_document_is_valid_openapi_31(document):
    assert document["openapi"] == "3.1.0"
    jsonschema_rs.validator_for(OPENAPI_31).validate(document)
    for key, value in walk(document):
        if key == "schema" or (key == "schemas" and value is document["components"]["schemas"]):
            for schema in value.values() if key == "schemas" else [value]:
                assert jsonschema_rs.meta.is_valid(schema), schema


def test_every_reference_resolves(document):
    for key, value in walk(document):
        if key == "$ref":
            target = document
            for part in ref_parts(value):
                assert part in target, value
                target = target[part]


def test_every_route_is_documented_and_every_documented_route_exists(app, document):
    routed = app_operations(app)
    documented = document_operations(document)
    assert set(routed) - set(documented) == set(), "routes missing from openapi.json"
    assert set(documented) - set(routed) == set(), "documented operations the app lacks"


def test_operation_ids_are_the_view_names(app, document):
    routed = app_operations(app)
    for key, operation in document_operations(document).items():
        if key in routed:
            assert operation["operationId"] == routed[key], key


def test_every_error_has_the_common_shape(document):
    for (method, path), operation in document_operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path, status) == ("/healthz", "503"):  # an unhealthy report is not an error
                continue
            schema = resolve(document, resolve(document, response)["content"]["application/json"]["schema"])
            assert_error_schema(document, schema, (method, path, status))


def test_every_error_schema_stands_alone(document):
    """Generators cannot merge `allOf` of Error and a narrower `code` (openapi-python-client dropped every error)."""
    schemas = document["components"]["schemas"]
    errors = {name: schema for name, schema in schemas.items() if name.startswith("Error") and name != "Error"}
    assert len(errors) >= 16
    for name, schema in errors.items():
        assert schema["properties"]["code"]["enum"], name
        assert_error_schema(document, schema, name)


def assert_error_schema(document: dict, schema: dict, where) -> None:
    """One object with `error` and `code` required, `code` a closed list of snake_case codes; no `allOf`."""
    if schema is document["components"]["schemas"]["Error"]:
        return
    assert "allOf" not in schema and schema["type"] == "object", where
    assert {"error", "code"} <= set(schema["required"]), where
    assert schema["properties"]["error"]["type"] == "string", where
    code = schema["properties"]["code"]
    assert code["type"] == "string", where
    codes = code.get("enum") or [None]
    assert all(re.fullmatch(r"[a-z]+(?:_[a-z]+)*", value or "") for value in codes), where


def test_admin_routes_declare_the_bearer_scheme(document):
    operations = document_operations(document)
    admin = {key for key, operation in operations.items() if {"adminToken": []} in operation.get("security", [])}
    assert admin == {("delete", "/delete-all-storefronts"), ("post", "/seed-specific"), ("post", "/seedrandom"),
                     ("get", "/usage"), ("get", "/jobs")}
    for key in admin:
        assert "401" in operations[key]["responses"]


def test_openapi_json_is_the_document_with_this_server(client, document):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = response.get_json()
    assert served.pop("servers") == [{"url": "http://localhost"}]
    assert served == document
    assert json.loads(OPENAPI_PATH.read_text()) == document


class AssetLinks(HTMLParser):
    """The URLs a page loads: scripts, style sheets, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.urls.append(attributes["src"])
        if tag == "link" and attributes.get("href"):
            self.urls.append(attributes["href"])


def test_docs_page_loads_only_local_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert not re.search(r"(https?:)?//", page), "the page must not load anything from another host"
    assert "validatorUrl: null" in page, "Swagger UI would send the document to an online validator"
    assert '"/openapi.json"' in page
    links = AssetLinks()
    links.feed(page)
    expected_types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    assert sorted(url.rpartition(".")[2] for url in links.urls) == ["css", "js", "png"]
    for url in links.urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype == expected_types["." + url.rpartition(".")[2]], url
        assert len(asset.data) > 100, url
    bundle = client.get("/docs/swagger-ui-bundle.js").get_data(as_text=True)
    assert "SwaggerUIBundle" in bundle


@pytest.mark.parametrize("name", ["index.html", "swagger-ui.js", "..%2Fmain.py", "LICENSE"])
def test_docs_serves_no_other_file(client, name):
    response = client.get(f"/docs/{name}")
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


# The PNG routes send whole files (they are small and never change); the docs assets honour byte ranges.
# The fuzzer's empty `Range` once got a 416, kept here as a case.


def test_png_routes_send_the_whole_file_whatever_the_range(client):
    assert client.post("/gen-achievement-image?date=31 Oct&product=soju").status_code == 200
    whole = client.get("/get-achievement-image?achievement_id=1").data
    for value in ["bytes=0-9", f"bytes={len(whole)}-", "", "items=0-5", "bytes=5-1"]:
        response = client.get("/get-achievement-image?achievement_id=1", headers={"Range": value})
        assert response.status_code == 200, value
        assert response.data == whole


def test_docs_asset_byte_ranges(client):
    whole = client.get("/docs/swagger-ui.css").data
    part = client.get("/docs/swagger-ui.css", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206
    assert part.data == whole[:10]
    past_end = client.get("/docs/swagger-ui.css", headers={"Range": f"bytes={len(whole)}-"})
    assert past_end.status_code == 416
    assert past_end.get_json()["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("value", ["", "items=0-5", "bytes=5-1", "bytes=x-y"])
def test_unusable_range_is_ignored(client, value):
    asset = client.get("/docs/swagger-ui.css", headers={"Range": value})
    assert asset.status_code == 200


def assert_documented(document: dict, method: str, path: str, response) -> None:
    """The answer's status, media type and JSON body are those the document gives for this operation."""
    operation = document["paths"][path][method]
    documented = resolve(document, operation["responses"][str(response.status_code)])
    if response.data:
        assert response.mimetype in documented["content"], (path, response.status_code, response.mimetype)
    else:
        assert "content" not in documented or response.status_code == 304
    schemathesis.openapi.from_dict(document)[path][method.upper()].validate_response(response)


def test_answers_the_fuzzer_does_not_provoke_are_documented(make_app, document):
    """Rate limits, the admin token, body limits and conditional requests: the fuzz app never meets them."""
    client = make_app(ADMIN_TOKEN="s3cret", GENERATION_RATE_LIMIT="1/minute", MAX_REQUEST_BYTES="100").test_client()
    made = client.post("/gen-achievement-image?date=31 Oct&product=soju")
    assert_documented(document, "post", "/gen-achievement-image", made)
    limited = client.post("/gen-achievement-image?date=31 Oct&product=soju")
    assert limited.status_code == 429
    assert_documented(document, "post", "/gen-achievement-image", limited)
    for method, path in [("delete", "/delete-all-storefronts"), ("post", "/seed-specific"), ("post", "/seedrandom")]:
        refused = client.open(path, method=method.upper())
        assert refused.status_code == 401
        assert_documented(document, method, path, refused)
    too_large = client.post("/seedrandom", data="x" * 101, headers={"Authorization": "Bearer s3cret"})
    assert too_large.status_code == 413
    assert_documented(document, "post", "/seedrandom", too_large)
    png = client.get("/get-achievement-image?achievement_id=1")
    for headers, status in [({"If-None-Match": png.headers["ETag"]}, 304), ({"Range": "bytes=0-9"}, 200)]:
        answer = client.get("/get-achievement-image?achievement_id=1", headers=headers)
        assert answer.status_code == status
        assert_documented(document, "get", "/get-achievement-image", answer)


@pytest.mark.parametrize(
    ("vendor_answer", "status"),
    [
        ({"status": 500, "json": {"error": "down"}}, 502),
        ({"status": 429, "json": {"errors": ["slow down"]}, "headers": {"Retry-After": "7"}}, 503),
        ({"status": 403, "json": {"id": "1", "name": "content_moderation", "errors": ["flagged"]}}, 422),
    ],
)
def test_provider_failures_are_documented(make_app, document, http, vendor_answer, status):
    """502, 503 and 422 come only from a failing provider: one answer of each, checked against the document."""
    client = make_app(STABILITY_API_KEY=STABILITY_KEY, PROVIDER_RETRIES="0").test_client()
    user_id = client.post("/seed-specific").get_json()["users"][0]["id"]
    http.add(responses.POST, STABILITY_CORE_URL, **vendor_answer)
    answer = client.post(f"/gen-new-storefront-images?user_id={user_id}&shop_theme=tech")
    assert answer.status_code == status
    assert answer.get_json()["provider"] == "stability"
    assert_documented(document, "post", "/gen-new-storefront-images", answer)
    http.add(responses.POST, STABILITY_CORE_URL, **vendor_answer)
    badge = client.post("/gen-achievement-image?date=31 Oct&product=soju")
    assert badge.status_code == status
    assert_documented(document, "post", "/gen-achievement-image", badge)
