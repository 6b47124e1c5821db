"""The service's errors: the types, each carrying the HTTP status and code of the JSON error it becomes, and the
handlers that answer every error of the app in that one JSON shape."""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, jsonify, request
from flask_limiter import RateLimitExceeded
from limits.errors import StorageError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    416: "range_not_satisfiable",
    429: "rate_limited",
}


class ApiError(Exception):
    """An error answered as `{"error": message, "code": code, **fields}`."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}
        self.fields = fields

    def to_dict(self) -> dict[str, object]:
        return {"error": self.message, "code": self.code, **self.fields}


class MissingParameter(ApiError):
    code = "missing_parameter"

    def __init__(self, field: str) -> None:
        super().__init__(f"The parameter '{field}' is required.", field=field)


class InvalidParameter(ApiError):
    code = "invalid_parameter"

    def __init__(self, field: str, message: str, **fields: object) -> None:
        super().__init__(message, field=field, **fields)


class NotFound(ApiError):
    status = 404
    code = "not_found"


class ProviderError(ApiError):
    """A generation provider failed after its retries (502)."""

    status = 502
    code = "provider_error"

    def __init__(self, provider: str, message: str, **fields: object) -> None:
        super().__init__(message, provider=provider, **fields)
        self.provider = provider


class ProviderBusy(ProviderError):
    """A provider was still rate-limiting us after the retries (503 with Retry-After)."""

    status = 503
    code = "provider_busy"

    def __init__(self, provider: str, message: str, retry_after: int = 30) -> None:
        super().__init__(provider, message)
        self.headers = {"Retry-After": str(max(1, int(retry_after)))}


class ContentRejected(ProviderError):
    """The provider's content filter refused the prompt (422); retrying cannot help."""

    status = 422
    code = "content_rejected"


RETRY_AFTER_S = 5  # what a 503 of a dependency down tells clients to wait before trying again


class Unavailable(ApiError):
    """A dependency is down (503, with Retry-After): the code names it, the message says what to expect."""

    status = 503

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(RETRY_AFTER_S)})


def unavailable(error: BaseException) -> Unavailable | None:
    """The 503 of an error that says a dependency is down (the database, the rate limit store), else None."""
    if isinstance(error, Unavailable):
        return error
    if isinstance(error, (OperationalError, InterfaceError, PoolTimeout)) or (
            isinstance(error, DBAPIError) and error.connection_invalidated):
        return Unavailable("database_unavailable", "The database does not answer; try again shortly.")
    if isinstance(error, StorageError):
        return Unavailable("limits_unavailable", "The rate limit store does not answer; try again shortly.")
    return None


def first_line(error: BaseException) -> str:
    """The first line of an error's message (drivers' messages run over several), for a log or a start-up line."""
    return (str(error).strip() or type(error).__name__).splitlines()[0]


class ConfigError(Exception):
    """A setting has a value the service cannot use; the message names the setting."""


def init_app(app: Flask) -> None:
    """Answer every error in the JSON shape: Werkzeug's (404, 405, 413...), ours, and any other exception."""
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(Exception, handle_unexpected_error)


def handle_api_error(error: ApiError):
    return jsonify(error.to_dict()), error.status, error.headers


def handle_http_error(error: HTTPException):
    response = error.get_response()
    code = HTTP_CODES.get(error.code or 500, "internal_error" if (error.code or 500) >= 500 else "bad_request")
    message = error.description
    if isinstance(error, RateLimitExceeded):  # its description is the bare limit, e.g. "30 per 1 minute"
        message = f"Too many requests to this route from this address (limit: {error.description}); try again later."
    response.set_data(current_app.json.dumps({"error": message, "code": code}))
    response.content_type = "application/json"
    return response


def handle_unexpected_error(error: Exception):
    if "db" in g:
        try:
            g.db.rollback()
        except Exception:  # the database that failed the request may fail its rollback too
            log.warning("rollback failed on %s %s", request.method, request.path)
    if (down := unavailable(error)) is not None:
        log.warning("%s on %s %s: %s", down.code, request.method, request.path, first_line(error))
        return handle_api_error(down)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify({"error": "The server hit an unexpected error.", "code": "internal_error"}), 500
