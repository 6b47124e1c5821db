"""The issuer every credential names: its public base URL, its Open Badges Profile (which is also the controller
document of the Data Integrity key), the URLs of its keys, and the opaque subject ids it gives users."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import current_app

from badges.dataintegrity import multikey_document, public_key_multibase
from badges.signing import badge_keys
from core.http_edge import base_url

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
OB_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
DID_CONTEXT = "https://www.w3.org/ns/did/v1"


def issuer_id() -> str:
    """The issuer's id: the URL of its Profile."""
    return f"{base_url()}/issuer"


def issuer_profile() -> dict:
    """The issuer's Open Badges Profile, as credentials embed it."""
    return {"id": issuer_id(), "type": ["Profile"], "name": current_app.extensions["settings"].badge_issuer_name,
            "url": f"{base_url()}/gallery"}


def issuer_document() -> dict:
    """What the issuer URL answers: the Profile, and the controller of the Data Integrity key.

    The JS verifiers dereference the key's `controller` and want a DID document: `did/v1` first in `@context`, and
    the key listed in `assertionMethod`."""
    return {"@context": [DID_CONTEXT, VC_CONTEXT, OB_CONTEXT], **issuer_profile(), "assertionMethod": [di_key_url()]}


def jwt_key_url() -> str:
    """The VC-JWT key's `kid`: a URL that answers it as a JWK."""
    return f"{base_url()}/keys/{badge_keys().jwt_key_name}"


def di_key_url() -> str:
    """The Data Integrity key's verification method: a URL with no fragment (verifier-core resolves no other)."""
    return f"{base_url()}/keys/{public_key_multibase(badge_keys().di.private_key)}"


def di_key_document() -> dict:
    """The Multikey document the Data Integrity key's URL answers."""
    return multikey_document(badge_keys().di.private_key, di_key_url(), issuer_id())


def subject_id(subject_key: str) -> str:
    """The user's `credentialSubject.id` at this issuer: a UUIDv5 of the user's random key, in the issuer's own
    namespace, so it is stable, differs per issuer, and cannot be guessed from the user's id."""
    return f"urn:uuid:{uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, issuer_id()), subject_key)}"


def timestamp(moment: datetime) -> str:
    """A UTC timestamp as VC dates write it: seconds, with Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
