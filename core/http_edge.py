"""What every request goes through around its route: bodies over the limit refused before any route reads them,
control characters refused in every parameter and read header, Range headers the service cannot honour ignored,
and `nosniff` on every answer; the headers of HTML pages; and the service's public base URL."""

from __future__ import annotations

import base64
import hashlib
import io

from flask import Flask, current_app, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from core.params import check_text

# The request headers the service reads (besides those Werkzeug parses into types, such as Content-Length).
READ_HEADERS = ("Authorization", "Idempotency-Key", "Prefer", "X-Request-ID", "Last-Event-ID", "Accept",
                "If-None-Match", "X-Sendfile-Type", "X-Accel-Mapping")
# Where the WSGI server puts each: read there, not through request.headers, which walks the whole environ per name.
_READ_HEADER_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in READ_HEADERS)


def init_app(app: Flask) -> None:
    app.before_request(refuse_large_bodies)
    app.before_request(refuse_control_characters)
    app.before_request(ignore_unusable_range)
    app.after_request(add_security_headers)


def case_insensitive_host(wsgi_app):
    """Host names are case-insensitive (RFC 9110) but Werkzeug compares TRUSTED_HOSTS case by case: lower the Host
    header before it is compared."""
    def lowered(environ, start_response):
        if host := environ.get("HTTP_HOST"):
            environ["HTTP_HOST"] = host.lower()
        return wsgi_app(environ, start_response)
    return lowered


def refuse_large_bodies() -> None:
    # Werkzeug only enforces the limit when the body is read; refuse early so every route answers alike.
    limit = current_app.extensions["settings"].max_request_bytes
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
    elif "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        # Werkzeug would cut a chunked body at the limit without a word, and the route would read half a body.
        # Read it here, one byte past the limit at most, and hand the route what was read.
        environ, body = request.environ, bytearray()
        try:
            while len(body) <= limit and (part := environ["wsgi.input"].read(limit + 1 - len(body))):
                body += part
        except Exception:  # the server's own error for bad framing (gunicorn's are no OSError): the client's fault
            raise BadRequest("The chunked body is malformed or cut short.") from None
        if len(body) > limit:
            raise RequestEntityTooLarge()
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(bytes(body)), str(len(body))
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING")  # the body is now one of known length


def refuse_control_characters() -> None:
    # A NUL reaching PostgreSQL is an error (SQLite takes it): refused alike on both, at the edge, naming the field.
    for name, value in request.args.items(multi=True):
        check_text(name, repr(name)[1:-1])
        check_text(value, name)
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str):
            check_text(value, name)
    environ = request.environ
    for name, key in _READ_HEADER_KEYS:
        value = environ.get(key)
        if value is not None:
            check_text(value, name)


def ignore_unusable_range() -> None:
    # RFC 9110: a Range in a unit we do not serve must be ignored, and a malformed one may be; Werkzeug would
    # answer both with 416, which is meant for a range past the end of the file.
    if "HTTP_RANGE" in request.environ and (request.range is None or request.range.units != "bytes"):
        del request.environ["HTTP_RANGE"]


def add_security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def page_headers(response, policy: str):
    """An HTML page's headers: `policy` as its Content-Security-Policy (never framed, so no clickjacking), no MIME
    sniffing, and only the origin as referrer to other sites."""
    response.headers["Content-Security-Policy"] = f"{policy}; base-uri 'none'; frame-ancestors 'none'"
    response.headers["X-Frame-Options"] = "DENY"  # frame-ancestors for browsers that predate it
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    return response


def inline_hash(text: str) -> str:
    """The CSP source that allows exactly this inline script or style, and nothing else inline."""
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def base_url() -> str:
    """Where clients reach this service: PUBLIC_BASE_URL, else (development only: production requires it) the URL of
    the current request. Every absolute URL the service writes starts with it, never with a Host header."""
    return current_app.extensions["settings"].public_base_url or request.host_url.rstrip("/")
