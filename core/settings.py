"""Settings: read once from the environment (and `.env`), checked, with their defaults in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import load_dotenv

from core.errors import ConfigError

IMAGE_PROVIDERS = ("auto", "clipdrop", "stability", "local")
TEXT_PROVIDERS = ("auto", "openai", "local")
STABILITY_ENGINES = ("core", "sd3", "ultra")
APP_ENVS = ("development", "production")
FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
CELERY_BROKER_SCHEMES = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; see `.env.example` for what each means."""

    host: str = "127.0.0.1"
    port: int = 5000
    database_url: str = field(default="sqlite:///instance/app.db", repr=False)  # may hold a password
    image_dir: Path = Path("instance/images")
    admin_token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ("*",)
    image_provider: str = "auto"
    text_provider: str = "auto"
    clipdrop_api_key: str | None = field(default=None, repr=False)
    clipdrop_api_url: str = "https://clipdrop-api.co"
    stability_api_key: str | None = field(default=None, repr=False)
    stability_api_host: str = "https://api.stability.ai"
    stability_engine: str = "core"
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_model: str = "gpt-5-mini"
    provider_timeout_s: float = 60.0
    provider_retries: int = 3
    provider_cooldown_s: float = 30.0
    # Calls in flight to one vendor across every process (None: no cap), and the lease of a call's slot.
    clipdrop_max_in_flight: int | None = None
    stability_max_in_flight: int | None = None
    openai_max_in_flight: int | None = None
    provider_lease_s: float = 30.0
    max_request_bytes: int = 1024 * 1024
    generation_rate_limit: str | None = None
    verify_rate_limit: str = "60/minute"
    ratelimit_storage_uri: str | None = field(default=None, repr=False)
    ratelimit_fail_open: bool = False  # the limit store down: skip the limits with a warning rather than answer 503
    app_env: str = "development"
    web_concurrency: int | None = None
    worker_connections: int = 1000  # open connections each gunicorn worker holds at once (gevent)
    trusted_proxies: int = 0
    # Jobs: where generation runs, how long a job may stay claimed, how long an Idempotency-Key is remembered.
    job_workers: int = 100  # jobs each process runs at once: they wait on vendors, not on our CPU
    job_stale_s: float | None = None  # None: 2 x the longest a job can run (see jobs/state.py)
    celery_broker_url: str | None = field(default=None, repr=False)  # may hold a password
    celery_queue: str = "futurepast-jobs"
    job_retention_days: int = 30  # finished jobs older than this are purged, with their idempotency keys
    idempotency_ttl_s: float = 86400.0
    sse_max_s: float = 300.0  # an event stream ends after this long; EventSource reconnects with Last-Event-ID
    # Spend: a daily budget (UTC) of provider cost; None means none.
    generation_budget_usd: float | None = None
    # The price table of the ledger, in USD (see README, "Spend and limits", for the sources).
    price_clipdrop_credit_usd: float = 0.01
    price_stability_credit_usd: float = 0.01
    price_openai_input_per_mtok_usd: float = 0.25
    price_openai_output_per_mtok_usd: float = 2.00
    # The exact-request image cache: how long a picture drawn is reused for the same request (0: never).
    image_cache_ttl_s: int = 30 * 86400
    # Image delivery: the store (disk under image_dir, or s3://bucket/prefix), and how a CDN serves it.
    image_store_url: str | None = None
    s3_endpoint_url: str | None = None
    image_public_base_url: str | None = None
    image_url_ttl_s: int = 3600
    # Where clients reach the service: the start of every absolute URL it writes (None: the request's own URL).
    public_base_url: str | None = None
    # The Host names the service answers to (empty: any); another Host is 400 bad_request.
    trusted_hosts: tuple[str, ...] = ()
    # Verifiable badges: the VC-JWT key and the Data Integrity key (PEM text or files), and the issuer's name.
    badge_signing_key: str | None = field(default=None, repr=False)
    badge_di_signing_key: str | None = field(default=None, repr=False)
    badge_issuer_name: str = "Future x Past"

    @classmethod
    def from_mapping(cls, env: Mapping[str, object]) -> Settings:
        """Build settings from environment-style names (`PORT`, `DATABASE_URL`...); empty means unset."""

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None:
                return None
            value = str(value).strip()
            return value or None

        def text(name: str, default: str | None) -> str | None:
            value = get(name)
            return default if value is None else value

        def number(name: str, default: float, kind: type, minimum: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                noun = "whole number" if kind is int else "number"
                raise ConfigError(f"{name}={raw!r} is not a {noun}") from None
            if value < minimum:
                raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() not in FLAGS:
                raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(FLAGS)}")
            return FLAGS[raw.lower()]

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = (get(name) or default).lower()
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} must be one of: {', '.join(allowed)}")
            return value

        defaults = cls()
        port = int(number("PORT", defaults.port, int, 1))
        if port > 65535:
            raise ConfigError(f"PORT={port} must be at most 65535")
        origins = tuple(o.strip() for o in (get("CORS_ORIGINS") or "*").split(",") if o.strip())
        settings = cls(
            host=text("HOST", defaults.host),
            port=port,
            database_url=text("DATABASE_URL", defaults.database_url),
            image_dir=Path(text("IMAGE_DIR", str(defaults.image_dir))),
            admin_token=get("ADMIN_TOKEN"),
            cors_origins=origins or ("*",),
            image_provider=choice("IMAGE_PROVIDER", defaults.image_provider, IMAGE_PROVIDERS),
            text_provider=choice("TEXT_PROVIDER", defaults.text_provider, TEXT_PROVIDERS),
            clipdrop_api_key=get("CLIPDROP_API_KEY"),
            clipdrop_api_url=text("CLIPDROP_API_URL", defaults.clipdrop_api_url).rstrip("/"),
            stability_api_key=get("STABILITY_API_KEY"),
            stability_api_host=text("STABILITY_API_HOST", defaults.stability_api_host).rstrip("/"),
            stability_engine=choice("STABILITY_ENGINE", defaults.stability_engine, STABILITY_ENGINES),
            openai_api_key=get("OPENAI_API_KEY"),
            openai_base_url=get("OPENAI_BASE_URL"),
            openai_model=text("OPENAI_MODEL", defaults.openai_model),
            provider_timeout_s=number("PROVIDER_TIMEOUT_S", defaults.provider_timeout_s, float, 0.001),
            provider_retries=int(number("PROVIDER_RETRIES", defaults.provider_retries, int, 0)),
            provider_cooldown_s=number("PROVIDER_COOLDOWN_S", defaults.provider_cooldown_s, float, 0),
            clipdrop_max_in_flight=int(number("CLIPDROP_MAX_IN_FLIGHT", 0, int, 1)) or None,
            stability_max_in_flight=int(number("STABILITY_MAX_IN_FLIGHT", 0, int, 1)) or None,
            openai_max_in_flight=int(number("OPENAI_MAX_IN_FLIGHT", 0, int, 1)) or None,
            provider_lease_s=number("PROVIDER_LEASE_S", defaults.provider_lease_s, float, 0.5),
            max_request_bytes=int(number("MAX_REQUEST_BYTES", defaults.max_request_bytes, int, 1)),
            generation_rate_limit=_rate_limit("GENERATION_RATE_LIMIT", get("GENERATION_RATE_LIMIT")),
            verify_rate_limit=_rate_limit("VERIFY_RATE_LIMIT", text("VERIFY_RATE_LIMIT", defaults.verify_rate_limit)),
            ratelimit_storage_uri=_limit_store_url(get("RATELIMIT_STORAGE_URI")),
            ratelimit_fail_open=flag("RATELIMIT_FAIL_OPEN", defaults.ratelimit_fail_open),
            app_env=choice("APP_ENV", defaults.app_env, APP_ENVS),
            web_concurrency=int(number("WEB_CONCURRENCY", 0, int, 1)) or None,
            worker_connections=int(number("WORKER_CONNECTIONS", defaults.worker_connections, int, 1)),
            trusted_proxies=int(number("TRUSTED_PROXIES", defaults.trusted_proxies, int, 0)),
            job_workers=int(number("JOB_WORKERS", defaults.job_workers, int, 1)),
            job_stale_s=number("JOB_STALE_S", None, float, 1) if get("JOB_STALE_S") else None,
            celery_broker_url=_broker_url(get("CELERY_BROKER_URL")),
            celery_queue=text("CELERY_QUEUE", defaults.celery_queue),
            job_retention_days=int(number("JOB_RETENTION_DAYS", defaults.job_retention_days, int, 1)),
            idempotency_ttl_s=number("IDEMPOTENCY_TTL_S", defaults.idempotency_ttl_s, float, 1),
            sse_max_s=number("SSE_MAX_S", defaults.sse_max_s, float, 0.1),
            generation_budget_usd=number("GENERATION_BUDGET_USD", None, float, 0)
            if get("GENERATION_BUDGET_USD") else None,
            price_clipdrop_credit_usd=number("PRICE_CLIPDROP_CREDIT_USD", defaults.price_clipdrop_credit_usd,
                                             float, 0),
            price_stability_credit_usd=number("PRICE_STABILITY_CREDIT_USD", defaults.price_stability_credit_usd,
                                              float, 0),
            price_openai_input_per_mtok_usd=number("PRICE_OPENAI_INPUT_PER_MTOK_USD",
                                                   defaults.price_openai_input_per_mtok_usd, float, 0),
            price_openai_output_per_mtok_usd=number("PRICE_OPENAI_OUTPUT_PER_MTOK_USD",
                                                    defaults.price_openai_output_per_mtok_usd, float, 0),
            image_cache_ttl_s=int(number("IMAGE_CACHE_TTL_S", defaults.image_cache_ttl_s, int, 0)),
            image_store_url=_store_url(get("IMAGE_STORE_URL")),
            s3_endpoint_url=get("S3_ENDPOINT_URL"),
            image_public_base_url=(get("IMAGE_PUBLIC_BASE_URL") or "").rstrip("/") or None,
            image_url_ttl_s=int(number("IMAGE_URL_TTL_S", defaults.image_url_ttl_s, int, 1)),
            public_base_url=_public_base_url(get("PUBLIC_BASE_URL"), get("BADGE_ISSUER_URL")),
            trusted_hosts=_trusted_hosts(get("TRUSTED_HOSTS")),
            badge_signing_key=get("BADGE_SIGNING_KEY"),
            badge_di_signing_key=get("BADGE_DI_SIGNING_KEY"),
            badge_issuer_name=text("BADGE_ISSUER_NAME", defaults.badge_issuer_name),
        )
        _check_keys(settings)
        return settings

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"


def _check_keys(settings: Settings) -> None:
    """A provider chosen by name must have its key: say which variable to set rather than fail on first use."""
    required = [
        ("IMAGE_PROVIDER", settings.image_provider, "clipdrop", "CLIPDROP_API_KEY", settings.clipdrop_api_key),
        ("IMAGE_PROVIDER", settings.image_provider, "stability", "STABILITY_API_KEY", settings.stability_api_key),
        ("TEXT_PROVIDER", settings.text_provider, "openai", "OPENAI_API_KEY", settings.openai_api_key),
    ]
    for setting, chosen, provider, key_name, key in required:
        if chosen == provider and not key:
            raise ConfigError(f"{setting}={provider} needs {key_name} to be set")


def read_env_file() -> None:
    """Read `.env` in the working directory into the environment; variables already set win."""
    load_dotenv(Path.cwd() / ".env", override=False)


def from_environment() -> Settings:
    """Settings from the environment, after reading `.env`."""
    read_env_file()
    return Settings.from_mapping(os.environ)


def _rate_limit(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a rate limit such as '30/minute'") from None
    return value


def _limit_store_url(value: str | None) -> str | None:
    """RATELIMIT_STORAGE_URI: a store the `limits` package knows (its message names the scheme, never the URL: it may
    hold a password)."""
    from limits.storage import SCHEMES

    scheme = urlsplit(value).scheme.lower() if value else None
    known = sorted(name for name in SCHEMES if not name.startswith("async+") and name != "futurepast-database")
    if value is not None and scheme not in known:
        raise ConfigError(f"RATELIMIT_STORAGE_URI has the scheme {scheme or 'none'!r}; it must be one of: "
                          f"{', '.join(known)}")
    return value


def _broker_url(value: str | None) -> str | None:
    if value is not None and not value.lower().startswith(CELERY_BROKER_SCHEMES):
        raise ConfigError(f"CELERY_BROKER_URL must start with one of: {', '.join(CELERY_BROKER_SCHEMES)}")
    return value


def _public_base_url(value: str | None, older_name: str | None) -> str | None:
    """PUBLIC_BASE_URL (or its older name BADGE_ISSUER_URL): an absolute http(s) URL, kept without a trailing slash."""
    name = "PUBLIC_BASE_URL" if value else "BADGE_ISSUER_URL"
    value = value or older_name
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment or " " in value:
        raise ConfigError(f"{name}={value!r} must be an absolute http(s) URL with no query, such as "
                          "https://badges.example")
    return value.rstrip("/")


def _trusted_hosts(value: str | None) -> tuple[str, ...]:
    """TRUSTED_HOSTS: host names (a port allowed), comma-separated; `.example.com` is that domain and its subdomains."""
    hosts = tuple(host.strip().lower() for host in (value or "").split(",") if host.strip())
    for host in hosts:
        if "/" in host or " " in host or "@" in host:
            raise ConfigError(f"TRUSTED_HOSTS has {host!r}: list host names such as api.example.com, not URLs")
    return hosts


def _store_url(value: str | None) -> str | None:
    if value is not None and not value.lower().startswith("s3://"):
        raise ConfigError(f"IMAGE_STORE_URL={value!r} must be s3://bucket[/prefix] (unset: files under IMAGE_DIR)")
    if value is not None and not value[5:].strip("/"):
        raise ConfigError(f"IMAGE_STORE_URL={value!r} names no bucket")
    return value
