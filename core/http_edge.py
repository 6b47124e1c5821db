"""What every request goes through around its route: bodies over the limit refused before any route reads them,
control characters refused in every parameter and read header, Range headers the service cannot honour ignored,
`nosniff` on every answer, and CORS; the headers of HTML pages; and the service's public base URL."""

from __future__ import annotations

import base64
import hashlib
import io

from flask import Flask, current_app, request
from flask_cors import CORS
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from core.params import CONTROL_CHARACTER, check_text

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


def allow_cross_origin(app: Flask, origins: tuple[str, ...], expose_headers: list[str]) -> None:
    """CORS for `origins` ('*': every one) by flask-cors, for the requests that ask for it: those with an `Origin`
    header, which browsers send on every cross-origin call and preflight. The others (an `<img>`, a server, curl)
    get their answer's CORS headers in one step, without flask-cors' per-request matching, which cost a PNG GET a
    tenth of its Python: `*` with the exposed headers when every origin is allowed (what flask-cors sends them too),
    else only `Vary: Origin`, so that a shared cache never hands a cross-origin call an answer made without it."""
    CORS(app, origins=list(origins), expose_headers=expose_headers)
    hooks = app.after_request_funcs[None]
    (position,) = [i for i, hook in enumerate(hooks) if hook.__name__ == "cors_after_request"]
    flask_cors_hook = hooks[position]
    anyone = "*" in origins
    exposed = ", ".join(sorted(expose_headers))

    def cors_after_request(response):
        if "HTTP_ORIGIN" in request.environ or request.method == "OPTIONS":
            return flask_cors_hook(response)
        if anyone:
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Expose-Headers"] = exposed
        else:
            response.vary.add("Origin")
        return response

    hooks[position] = cors_after_request


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
    environ = request.environ
    if not environ.get("CONTENT_LENGTH") and "HTTP_TRANSFER_ENCODING" not in environ:
        return  # no body: every GET, in one look (request.content_length parses two headers)
    limit = current_app.extensions["settings"].max_request_bytes
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
    elif "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        # Werkzeug would cut a chunked body at the limit without a word, and the route would read half a body.
        # Read it here, one byte past the limit at most, and hand the route what was read.
        body = bytearray()
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
    environ = request.environ
    query = environ.get("QUERY_STRING", "")
    if "%" in query or CONTROL_CHARACTER.search(query):  # else no parameter can decode to a control character
        for name, value in request.args.items(multi=True):
            check_text(name, repr(name)[1:-1])
            check_text(value, name)
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str):
            check_text(value, name)
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
