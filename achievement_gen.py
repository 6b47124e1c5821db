"""OpenAI, or any OpenAI-compatible server, writes the achievement: structured JSON asked for, read tolerantly, checked.

Transport retries (429, 5xx, timeouts, dropped connections) are the SDK's own, with `max_retries=PROVIDER_RETRIES`
and `timeout=PROVIDER_TIMEOUT_S`. A reply that arrives but cannot be used is asked for again, up to
PROVIDER_RETRIES more times within the deadline, and is then a provider error.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from datetime import date

import httpx2
import openai

from core import http_client
from core.celebrations import nearest_celebration
from core.errors import ContentRejected, ProviderBusy, ProviderError
from core.ledger import record_attempt, vendor_number
from core.provider_types import AchievementDraft
from core.settings import Settings

log = logging.getLogger(__name__)

NAME = "openai"
FIELDS = ("name", "description", "occasion", "product_type")
MAX_CHARS = {"name": 100, "description": 2000, "occasion": 200, "product_type": 200}
MAX_REPLY_CHARS = 20_000
SCHEMA = {
    "type": "object",
    "properties": {field: {"type": "string"} for field in FIELDS},
    "required": list(FIELDS),
    "additionalProperties": False,
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "achievement", "schema": SCHEMA, "strict": True}}
JSON_MODE = {"type": "json_object"}
INSTRUCTIONS = (
    "You write gamified achievements for a social shopping app. Answer with one JSON object and nothing else, "
    'with the string keys "name" (a short, playful badge name of two to five words), "description" (about 50 '
    "words that congratulate the buyer and invite them to share the achievement with their friends), "
    '"occasion" (the name of the celebration) and "product_type" (the general kind of product, in a few words).'
)
REFUSAL_CODES = ("content_filter", "content_policy_violation")
FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)


class UnusableReply(ValueError):
    """A reply that arrived but holds no achievement we can save."""


def is_configured(settings: Settings) -> bool:
    """OpenAI (or a compatible server) is available when OPENAI_API_KEY is set."""
    return bool(settings.openai_api_key)


def write_achievement(day: date, product: str, settings: Settings) -> AchievementDraft:
    """Ask the model for an achievement tied to the celebration nearest `day`, for buyers of `product`."""
    if not settings.openai_api_key:
        raise ProviderError(NAME, "OpenAI needs OPENAI_API_KEY to be set.")
    client = client_for(settings)
    messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": _request(day, product)}]
    deadline = time.monotonic() + http_client.deadline_s(settings)
    attempts = settings.provider_retries + 1
    for attempt in range(1, attempts + 1):
        reply = _ask(client, messages, settings.openai_model)
        try:
            return parse_draft(reply)
        except UnusableReply as error:
            log.warning("openai: unusable reply (%s), attempt %d of %d", error, attempt, attempts)
        if time.monotonic() >= deadline:
            break
    raise ProviderError(NAME, f"openai's reply could not be used after {attempt} attempt(s).")


def client_for(settings: Settings) -> openai.OpenAI:
    """The SDK client of these settings, shared by every request (and built before the first one by warm_up)."""
    key = (settings.openai_api_key, settings.openai_base_url, settings.provider_timeout_s, settings.provider_retries,
           settings.openai_model)
    with _clients_lock:  # first requests that come together share one client (a second one was never closed)
        client = _clients.pop(key, None) or _client(*key)
        _clients[key] = client  # the most recently used last
        while len(_clients) > MAX_CLIENTS:
            _clients.pop(next(iter(_clients))).close()
    return client


MAX_CLIENTS = 8  # configurations: the service has one; tests have many, used one after another
_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(api_key: str, base_url: str | None, timeout: float, retries: int, model: str) -> openai.OpenAI:
    """One client per configuration, built on first use (the SDK refuses to build without a key).

    Its transport writes each attempt the SDK makes, retries included, to the ledger (core/ledger.py).
    """
    http = openai.DefaultHttpx2Client(transport=RecordingTransport(model))
    return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=retries, http_client=http)


def _request(day: date, product: str) -> str:
    when, occasion = nearest_celebration(day)
    return (
        f"Write an achievement for people who buy {json.dumps(product)} around {day:%d %B %Y}. "
        f"Tie it to the celebration on or nearest to that day (our calendar says {occasion}, on {when:%d %B}). "
        "Reply in JSON."
    )


def _ask(client: openai.OpenAI, messages: list[dict], model: str) -> str:
    """One completion, as a JSON schema where the server supports it, else in JSON mode."""
    try:
        try:
            completion = client.chat.completions.create(model=model, messages=messages, response_format=JSON_SCHEMA)
        except openai.BadRequestError as error:
            if error.code in REFUSAL_CODES:
                raise
            log.info("openai: the server refused a JSON schema; asking in JSON mode")
            completion = client.chat.completions.create(model=model, messages=messages, response_format=JSON_MODE)
    except openai.OpenAIError as error:
        raise _provider_error(error) from None
    # A lax compatible server may leave out any part of the reply: what is missing reads as an empty reply.
    choices = getattr(completion, "choices", None)
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = getattr(choice, "message", None)
    if getattr(choice, "finish_reason", None) == "content_filter" or getattr(message, "refusal", None):
        raise ContentRejected(NAME, "openai's content filter refused the request.")
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else ""


def _provider_error(error: openai.OpenAIError) -> ProviderError:
    """Our error for an SDK failure that survived its retries; the SDK's text may quote the key, so it is dropped."""
    if isinstance(error, openai.RateLimitError):
        if error.code == "insufficient_quota":
            return ProviderError(NAME, "openai has no quota left on our key (HTTP 429).")
        retry_after = http_client.retry_after_s(error.response.headers)
        return ProviderBusy(NAME, "openai is rate-limiting our requests; try again later.",
                            retry_after=http_client.BUSY_RETRY_AFTER_S if retry_after is None else max(1, retry_after))
    if isinstance(error, openai.BadRequestError) and error.code in REFUSAL_CODES:
        return ContentRejected(NAME, "openai's content filter refused the request.")
    if isinstance(error, openai.APITimeoutError):
        return ProviderError(NAME, "openai did not answer in time.")
    if isinstance(error, openai.APIConnectionError):
        return ProviderError(NAME, "The connection to openai failed.")
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(NAME, f"openai refused our API key (HTTP {error.status_code}); check OPENAI_API_KEY.")
    if isinstance(error, openai.APIStatusError):
        return ProviderError(NAME, f"openai failed with HTTP {error.status_code}.")
    return ProviderError(NAME, f"openai failed ({type(error).__name__}).")


def parse_draft(reply: str) -> AchievementDraft:
    """Read an achievement from what models really return: fenced JSON, a Python dict, keys in any spelling."""
    data = _load_object(reply[:MAX_REPLY_CHARS])
    values: dict[str, str] = {}
    for key, value in data.items():
        field = _field_for(str(key))
        if field and field not in values:
            values[field] = _text(value)
    for field in FIELDS:
        value = values.get(field, "")
        if not value:
            raise UnusableReply(f"no {field}")
        if len(value) > MAX_CHARS[field]:
            raise UnusableReply(f"{field} longer than {MAX_CHARS[field]} characters")
    return AchievementDraft(*(values[field] for field in FIELDS))


def _load_object(text: str) -> dict:
    """The first JSON object (or Python dict literal) in the reply, inside a code fence or not."""
    candidates = [match.group(1) for match in FENCE.finditer(text)] + [text]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        for load in (json.loads, ast.literal_eval):
            try:
                value = load(candidate.strip())
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(value, list) and value and isinstance(value[0], dict):
                value = value[0]
            if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), dict):
                value = next(iter(value.values()))  # {"achievement": {...}}
            if isinstance(value, dict):
                return value
    raise UnusableReply("no JSON object")


def _field_for(key: str) -> str | None:
    """Which of our fields a key names: "Name of the Achievement", "productType", "Occasion"..."""
    word = re.sub(r"[^a-z]", "", key.lower())
    if "desc" in word:
        return "description"
    if any(part in word for part in ("occasion", "celebration", "holiday", "event")):
        return "occasion"
    if "product" in word or word in ("type", "category"):
        return "product_type"
    if "name" in word or "title" in word or word in ("achievement", "badge"):
        return "name"
    return None


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        value = ", ".join(str(item) for item in value if isinstance(item, str | int | float))
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return ""
    return " ".join(str(value).split())


def warm_up(settings: Settings) -> None:
    """Make one request through the SDK before the first real one, answered in memory: no network, no ledger row.

    The SDK builds its client, resources and reply models on first use (~0.2 s). In the preforking server this runs
    in the master, so what that first call builds or rewrites is built once, in pages every worker shares.
    """
    client = client_for(settings)
    _ = client.chat.completions  # the SDK imports its resources on first access
    # The platform headers of every request: the SDK works them out once, running `uname -p` in a subprocess, and a
    # burst of first requests (greenlets of one worker) each ran its own before the first had filled the cache.
    _ = client.default_headers
    rehearsal = client.with_options(http_client=httpx2.Client(transport=httpx2.MockTransport(_rehearsal_reply)))
    quiet = logging.getLogger("httpx2")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its line for each request would read as a call at start-up
    try:
        parse_draft(_ask(rehearsal, [{"role": "user", "content": "warm-up"}], settings.openai_model))
    finally:
        quiet.setLevel(level)
        rehearsal.close()


def _rehearsal_reply(request: httpx2.Request) -> httpx2.Response:
    draft = {"name": "Warm-up", "description": "Started the service.", "occasion": "Start-up", "product_type": "none"}
    return httpx2.Response(200, json={
        "id": "warm-up", "object": "chat.completion", "created": 0, "model": json.loads(request.content)["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": json.dumps(draft)}}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    })


class RecordingTransport(httpx2.BaseTransport):
    """The SDK's transport: records each attempt in the ledger, with the reply's `usage` tokens."""

    def __init__(self, model: str, inner: httpx2.BaseTransport | None = None) -> None:
        self.model = model
        self.inner = inner or httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
        except Exception:
            record_attempt(seconds=time.perf_counter() - started, model=self.model)
            raise
        usage = None
        if response.status_code == 200:
            response.read()  # a chat completion is one small JSON body; the SDK reads it again from memory
            try:
                usage = json.loads(response.content).get("usage")
            except (ValueError, AttributeError):
                usage = None
        record_attempt(seconds=time.perf_counter() - started, status=response.status_code,
                       headers=response.headers, usage=usage if isinstance(usage, dict) else None, model=self.model)
        return response

    def close(self) -> None:
        self.inner.close()


def bill(status: int | None, headers: Mapping[str, str], usage: Mapping[str, object], settings: Settings) -> dict:
    """One attempt's ledger figures: the reply's prompt and completion tokens, at the PRICE_OPENAI_* settings."""
    tokens_in = int(vendor_number(usage.get("prompt_tokens")) or 0)
    tokens_out = int(vendor_number(usage.get("completion_tokens")) or 0)
    return {"input_tokens": tokens_in, "output_tokens": tokens_out,
            "cost_usd": (tokens_in * settings.price_openai_input_per_mtok_usd
                         + tokens_out * settings.price_openai_output_per_mtok_usd) / 1e6}
