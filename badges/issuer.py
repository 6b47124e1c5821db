"""The issuer every credential names: its public base URL and its Open Badges Profile."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app, request

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
OB_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"


def base_url() -> str:
    """Where this service is reached: BADGE_ISSUER_URL, else the URL of the current request."""
    return current_app.extensions["settings"].badge_issuer_url or request.host_url.rstrip("/")


def issuer_profile() -> dict:
    """The issuer's Open Badges Profile, at this service's base URL."""
    base = base_url()
    return {"id": f"{base}/issuer", "type": ["Profile"],
            "name": current_app.extensions["settings"].badge_issuer_name, "url": base}


def timestamp(moment: datetime) -> str:
    """A UTC timestamp as VC dates write it: seconds, with Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
