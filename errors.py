"""The service's error types: each carries the HTTP status and code of the JSON error it becomes."""

from __future__ import annotations


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


class ConfigError(Exception):
    """A setting has a value the service cannot use; the message names the setting."""
