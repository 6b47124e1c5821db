"""Sending PNGs: `/images/<sha256>.png`, and the PNG answers of the compat routes (sendfile, nginx offload, S3)."""

from __future__ import annotations

import os
from collections.abc import Callable

from flask import Blueprint, current_app, redirect, request
from sqlalchemy import select
from werkzeug.wsgi import wrap_file

from core.errors import NotFound
from core.image_store import IMMUTABLE, SHA256_NAME, DiskStore, ImageStore, S3Store
from models import ImageFile

bp = Blueprint("images", __name__)
# The compat routes name a row, whose image may change: browsers check again after an hour.
COMPAT_CACHE = "public, max-age=3600"


def send_png(sha256: str | None, not_found: Callable[[], NotFound], *, cache_control: str = COMPAT_CACHE,
             redirect_s3: bool = False):
    """The PNG of `sha256` with its hash as ETag; a matching `If-None-Match` gets a 304 without the file being opened.

    On disk: the file through sendfile(), or, when the proxy in front asks for it, an empty body that tells it which
    file to send (`accel_redirect`). On S3: the object's bytes streamed through, or (`redirect_s3`) a 302 to where
    the browser can fetch it.
    """
    if not sha256:
        raise not_found()
    app = current_app
    if "HTTP_IF_NONE_MATCH" in request.environ and request.if_none_match.contains_weak(sha256):
        response = app.response_class(status=304)
    else:
        response = _png_body(app.extensions["image_store"], sha256, not_found, redirect_s3)
        if response.status_code == 302:
            return response
    response.set_etag(sha256)
    response.headers["Cache-Control"] = cache_control
    return response


def _png_body(store: ImageStore, sha256: str, not_found: Callable[[], NotFound], redirect_s3: bool):
    app = current_app
    if isinstance(store, S3Store):
        if redirect_s3:
            response = redirect(store.url(sha256), 302)
            # A presigned URL expires: a cached redirect must not outlive it.
            response.headers["Cache-Control"] = IMMUTABLE if store.public_base_url else \
                f"public, max-age={store.url_ttl_s // 2}"
            return response
        try:
            body, length = store.open(sha256)
        except FileNotFoundError:
            raise not_found() from None
        response = app.response_class(body.iter_chunks(64 * 1024), mimetype="image/png", direct_passthrough=True)
        response.call_on_close(body.close)
        response.content_length = length
        return response
    assert isinstance(store, DiskStore)
    path = os.path.join(store.folder, store.relative_path(sha256))  # a str: pathlib cost more than the look-up
    internal_uri = accel_redirect(path)
    if internal_uri is not None:
        if not os.path.exists(path):
            raise not_found()
        response = app.response_class(b"", mimetype="image/png")
        response.headers["X-Accel-Redirect"] = internal_uri
        return response
    try:
        file = open(path, "rb")  # noqa: SIM115 - the server closes it once sent
    except FileNotFoundError:
        raise not_found() from None
    body = wrap_file(request.environ, file)  # the server's sendfile, when it has one
    response = app.response_class(body, mimetype="image/png", direct_passthrough=True)
    response.content_length = os.fstat(file.fileno()).st_size
    return response


def accel_redirect(path: str) -> str | None:
    """The internal URI under which the proxy in front sends the file at `path` itself, when the request asks for
    that (Rack::Sendfile's protocol: `X-Sendfile-Type: X-Accel-Redirect`, and `X-Accel-Mapping: <folder>=<URI>`
    for a folder that holds `path`); else None, and the service sends the bytes. Only the proxy sets these headers:
    a client that reaches the service without one gets its image."""
    environ = request.environ
    if environ.get("HTTP_X_SENDFILE_TYPE", "").strip().lower() != "x-accel-redirect":
        return None
    for mapping in environ.get("HTTP_X_ACCEL_MAPPING", "").split(","):
        folder, found, uri = (part.strip() for part in mapping.partition("="))
        if found and folder and uri and path.startswith(folder):
            return uri + path[len(folder):]
    return None


@bp.get("/images/<name>")
def get_image(name: str):
    """A stored PNG by its content hash: immutable, so cached for a year by browsers and CDNs."""
    sha256 = name.removesuffix(".png")

    def not_found() -> NotFound:
        return NotFound(f"No image is named {name!r}.", code="image_not_found")

    if not name.endswith(".png") or not SHA256_NAME.fullmatch(sha256):
        raise not_found()
    store = current_app.extensions["image_store"]
    if isinstance(store, S3Store):  # no request to the bucket per view: the images table knows what is stored
        with current_app.extensions["engine"].connect() as connection:
            if connection.execute(select(ImageFile.sha256).where(ImageFile.sha256 == sha256)).first() is None:
                raise not_found()
    return send_png(sha256, not_found, cache_control=IMMUTABLE, redirect_s3=True)
