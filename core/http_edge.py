"""What every request goes through around its route: bodies over the limit refused before any route reads them,
Range headers the service cannot honour ignored, and `nosniff` on every answer."""

from __future__ import annotations

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge


def init_app(app: Flask) -> None:
    app.before_request(refuse_large_bodies)
    app.before_request(ignore_unusable_range)
    app.after_request(add_security_headers)


def refuse_large_bodies() -> None:
    # Werkzeug only enforces the limit when the body is read; refuse early so every route answers alike.
    if request.content_length is not None and request.content_length > current_app.extensions[
            "settings"].max_request_bytes:
        raise RequestEntityTooLarge()


def ignore_unusable_range() -> None:
    # RFC 9110: a Range in a unit we do not serve must be ignored, and a malformed one may be; Werkzeug would
    # answer both with 416, which is meant for a range past the end of the file.
    if "HTTP_RANGE" in request.environ and (request.range is None or request.range.units != "bytes"):
        del request.environ["HTTP_RANGE"]


def add_security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
