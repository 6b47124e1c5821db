"""The one retry policy of the HTTP image providers: per-call timeout, backoff with jitter, Retry-After, a deadline.

Retried: 429, 5xx, timeouts and dropped connections, up to PROVIDER_RETRIES times after the first attempt.
Every other answer comes back at once for the provider to read. One provider call, every attempt and wait
included, ends within DEADLINE_TIMEOUTS x PROVIDER_TIMEOUT_S: a wait that would end past it is not taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from core.cpu import take_turn
from core.errors import ProviderBusy, ProviderError
from core.ledger import record_attempt
from core.settings import Settings

log = logging.getLogger(__name__)

BACKOFF_S = 0.5  # first wait; doubled after each further failure
BACKOFF_MAX_S = 8.0
JITTER_S = 0.25
DEADLINE_TIMEOUTS = 2
BUSY_RETRY_AFTER_S = 30  # what we tell our clients when a rate-limiting provider did not say
TRANSIENT_ERRORS = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)

_backoff = wait_exponential(multiplier=BACKOFF_S, max=BACKOFF_MAX_S) + wait_random(0, JITTER_S)


def deadline_s(settings: Settings) -> float:
    """How long one provider call may take, every retry and wait included."""
    return settings.provider_timeout_s * DEADLINE_TIMEOUTS


def post(provider: str, url: str, settings: Settings, model: str | None = None, **kwargs) -> requests.Response:
    """POST under the shared retry policy; returns a 2xx or a 4xx other than 429, else raises a ProviderError.

    Each attempt is written to the ledger (core/ledger.py) as `model`, with what the vendor answered.
    """
    deadline = time.monotonic() + deadline_s(settings)

    def attempt() -> requests.Response:
        timeout = min(settings.provider_timeout_s, max(deadline - time.monotonic(), 0.01))
        started = time.perf_counter()
        try:
            response = requests.post(url, timeout=timeout, stream=True, **kwargs)
            # A burst's pictures come back together, and an answer already received is read without a pause
            # (1 MB, 10 KiB at a time): each is read in its turn, behind whatever else is ready (core/cpu.py).
            take_turn()
            response.content  # noqa: B018 - read here, so that an answer cut off midway is retried like any other
        except requests.RequestException:
            record_attempt(seconds=time.perf_counter() - started, model=model)
            raise
        record_attempt(seconds=time.perf_counter() - started, status=response.status_code,
                             headers=response.headers, model=model)
        return response

    retrying = Retrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS) | retry_if_result(_is_transient),
        stop=stop_after_attempt(settings.provider_retries + 1) | stop_before_delay(deadline_s(settings)),
        wait=_wait,
        before_sleep=lambda state: _log_retry(provider, settings, state),
        retry_error_callback=lambda state: state.outcome.result(),  # the last answer, or its exception raised
    )
    try:
        response = retrying(attempt)
    except requests.Timeout:
        raise ProviderError(provider, f"{provider} did not answer within {settings.provider_timeout_s:g} s.") from None
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        raise ProviderError(provider, f"The connection to {provider} failed.") from None
    except requests.RequestException as error:
        raise ProviderError(provider, f"{provider} could not be called ({type(error).__name__}).") from None
    if response.status_code == 429:
        retry_after = retry_after_s(response.headers)
        raise ProviderBusy(provider, f"{provider} is rate-limiting our requests; try again later.",
                           retry_after=BUSY_RETRY_AFTER_S if retry_after is None else max(1.0, retry_after))
    if response.status_code >= 500:
        raise ProviderError(provider, f"{provider} failed with HTTP {response.status_code}.")
    return response


def refuse_unless_ok(provider: str, response: requests.Response, key: str, key_name: str) -> None:
    """Raise the provider error for any answer but 200: our key refused (401, 403), no credits (402), or another."""
    status = response.status_code
    if status in (401, 403):
        raise ProviderError(provider, f"{provider} refused our API key ({describe(response, key)}); "
                                      f"check {key_name}.")
    if status == 402:
        raise ProviderError(provider, f"{provider} has no credits left on our key (HTTP 402).")
    if status != 200:
        raise ProviderError(provider, f"{provider} refused the request ({describe(response, key)}).")


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The seconds a `Retry-After` header asks for (a number or an HTTP date), or None when absent or unreadable."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe(response: requests.Response, secret: str | None, limit: int = 200) -> str:
    """`HTTP <status>` and the provider's own error text, shortened, with our key blanked out if ever echoed."""
    try:
        body = response.json()
    except ValueError:
        body = None
    parts: list[str] = []
    if isinstance(body, dict):
        for key in ("name", "error", "message", "errors"):
            value = body.get(key)
            if isinstance(value, list):
                parts.extend(str(item) for item in value)
            elif isinstance(value, dict):
                parts.append(str(value.get("message", "")))
            elif value:
                parts.append(str(value))
    text = " ".join(" ".join(parts).split())
    if secret:
        text = text.replace(secret, "***")
    return f"HTTP {response.status_code}: {text[:limit]}" if text else f"HTTP {response.status_code}"


def _is_transient(response: requests.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def _wait(state: RetryCallState) -> float:
    """The provider's Retry-After when it sent one, else exponential backoff with jitter."""
    if not state.outcome.failed:
        retry_after = retry_after_s(state.outcome.result().headers)
        if retry_after is not None:
            return retry_after
    return _backoff(state)


def _log_retry(provider: str, settings: Settings, state: RetryCallState) -> None:
    if state.outcome.failed:
        reason = type(state.outcome.exception()).__name__
    else:
        reason = f"HTTP {state.outcome.result().status_code}"
    log.warning("%s: %s; retry %d of %d in %.2f s", provider, reason, state.attempt_number,
                settings.provider_retries, state.upcoming_sleep)
