"""The API describes itself: the OpenAPI document at /openapi.json and Swagger UI at /docs, served offline."""

from __future__ import annotations

import json
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Flask, current_app, jsonify, render_template_string, send_from_directory
from markupsafe import Markup

from core.errors import NotFound
from core.http_edge import base_url, inline_hash, page_headers

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"
# Swagger UI 5 (the first to render OpenAPI 3.1), as the flask-swagger-ui package ships it: no CDN needed.
SWAGGER_UI_DIR = Path(flask_swagger_ui.__file__).parent / "dist"
SWAGGER_UI_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
# validatorUrl: null, or Swagger UI would send the document to an online validator. The script is inline, allowed by
# its hash in the page's Content-Security-Policy: no other inline script can run on the page where the admin token
# is typed.
DOCS_SCRIPT = """
    window.ui = SwaggerUIBundle({
      url: {{ url_for('docs.openapi_document') | tojson }},
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      validatorUrl: null
    });
  """
DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{{ title }}</title>
  <link rel="stylesheet" href="{{ url_for('docs.docs_asset', filename='swagger-ui.css') }}">
  <link rel="icon" type="image/png" href="{{ url_for('docs.docs_asset', filename='favicon-32x32.png') }}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{{ url_for('docs.docs_asset', filename='swagger-ui-bundle.js') }}"></script>
  <script>{{ script }}</script>
</body>
</html>
"""
# Swagger UI shows its icons as data: URIs, and "Try it out" calls this service; nothing else, from nowhere else.
DOCS_POLICY = ("default-src 'none'; script-src 'self' {script}; style-src 'self'; "
               "img-src 'self' data:; connect-src 'self'; form-action 'none'")

docs = Blueprint("docs", __name__)


def load_openapi() -> dict:
    """The hand-written OpenAPI document, the one description of every route."""
    return json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))


@docs.get("/openapi.json")
def openapi_document():
    """The OpenAPI document, its `servers` naming the service's public URL (PUBLIC_BASE_URL, else in development the
    address it was fetched from)."""
    document = current_app.extensions["openapi"]
    servers = [{"url": base_url()}]
    return jsonify({"openapi": document["openapi"], "info": document["info"], "servers": servers, **document})


@docs.get("/docs")
def docs_page():
    """Swagger UI rendering the OpenAPI document, every asset served by this service."""
    script = render_template_string(DOCS_SCRIPT)
    page = render_template_string(DOCS_PAGE, title=current_app.extensions["openapi"]["info"]["title"],
                                  script=Markup(script))
    return page_headers(current_app.make_response(page), DOCS_POLICY.format(script=inline_hash(script)))


@docs.get("/docs/<filename>")
def docs_asset(filename: str):
    """One of the few Swagger UI files the docs page needs."""
    if filename not in SWAGGER_UI_ASSETS:
        raise NotFound(f"The docs page has no asset named {filename!r}.", code="not_found")
    return send_from_directory(SWAGGER_UI_DIR, filename)


def init_app(app: Flask) -> None:
    """Load the OpenAPI document once and register `/openapi.json` and `/docs`."""
    app.extensions["openapi"] = load_openapi()
    app.register_blueprint(docs)
