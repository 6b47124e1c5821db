"""Verifiable badges: Open Badges 3.0 credentials for awards, signed, baked into the badge PNG, verified and revoked,
and the pages people share them on.

- `signing`: the two keys (VC-JWT, Data Integrity) and the VC-JWT signer;
- `rdfc`, `dataintegrity`: JSON-LD canonicalization as the JS verifiers do it, and eddsa-rdfc-2022 proofs;
- `issuer`: the issuer's public URL, its Profile and controller document, the keys' URLs, subject ids;
- `proofs`: securing a document in either form, with the service's keys and URLs;
- `credentials`: issuing and revoking on award, and building a credential from its row;
- `status`: the Bitstring Status Lists of revocations;
- `verify`: baking into a PNG, and verifying a credential from itself alone;
- `routes`: the credential, badge, key, issuer, achievement, status list and `/verify` routes;
- `pages`: the share page and the gallery, with their templates.
"""

from __future__ import annotations

from flask import Flask

from badges.pages import pages
from badges.routes import bp
from badges.signing import BadgeKeys
from core.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Load the keys (production refuses to start without them, or without PUBLIC_BASE_URL: every URL a credential
    names must stay the same whatever Host a request carries); register the routes and the pages."""
    if settings.is_production and not settings.public_base_url:
        raise SystemExit("APP_ENV=production needs PUBLIC_BASE_URL to be set (the URL clients reach the service at)")
    app.extensions["badge_keys"] = BadgeKeys.load(settings)
    app.register_blueprint(bp)
    app.register_blueprint(pages)
