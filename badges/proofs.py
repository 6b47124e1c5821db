"""Securing a credential in its two forms: as a VC-JWT (OB 3.0 section 8.2) and with an embedded Data Integrity proof
(eddsa-rdfc-2022), each with its key and the URL that key answers at."""

from __future__ import annotations

from datetime import datetime

from badges.dataintegrity import add_proof
from badges.issuer import di_key_url, jwt_key_url, timestamp
from badges.rdfc import canonicalizer
from badges.signing import badge_keys


def as_vc_jwt(credential: dict, issued_at: datetime) -> str:
    """The credential as a VC-JWT whose `kid` is the URL of the key that signed it."""
    return badge_keys().sign_jwt(credential, jwt_key_url(), issued_at)


def with_proof(document: dict, created: datetime) -> dict:
    """The document with an embedded eddsa-rdfc-2022 proof by the Data Integrity key, made `created` (a credential's
    issuance, so that the same row always gives the same bytes)."""
    return add_proof(document, badge_keys().di.private_key, di_key_url(), timestamp(created), canonicalizer())
