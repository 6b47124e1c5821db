"""gunicorn's own answers, to requests it refuses before the app sees them (a request line or headers too large, a
malformed request), in the service's JSON error shape instead of gunicorn's HTML page. Installed by gunicorn.conf.py,
so it holds for `python main.py` and the production command, whatever the worker class (sync, gthread, gevent):
every worker answers such a request through `gunicorn.util.write_error`."""

from __future__ import annotations

import json

from gunicorn import util

# gunicorn's status -> our code and sentence. gunicorn's own message is logged by it, not sent: it may echo the
# client's bytes back.
ERRORS = {
    400: ("bad_request", "The request is malformed (its request line, a header or the chunked body framing)."),
    403: ("forbidden", "The request is refused."),
    414: ("uri_too_long", "The request line (method, path and query string) is too long."),
    417: ("expectation_failed", "The Expect header asks for something the service does not do."),
    431: ("headers_too_large", "The request's headers are too large or too many."),
    501: ("not_implemented", "The request uses a transfer coding the service does not take."),
}
INTERNAL = ("internal_error", "The server hit an unexpected error.")


def json_error(status: int, reason: str) -> bytes:
    """The whole HTTP answer (status line, headers, JSON body) for a request gunicorn refused with `status`."""
    code, message = ERRORS.get(status, INTERNAL)
    body = json.dumps({"error": message, "code": code}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode("latin-1") + body


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, answering JSON."""
    util.write_nonblock(sock, json_error(status_int, reason))


def install() -> None:
    """Make every gunicorn worker of this process (and of those it forks) answer its own errors in JSON."""
    util.write_error = write_json_error
