"""Verifiable badges: Open Badges 3.0 credentials for awards, signed, baked into the badge PNG, verified and revoked,
and the pages people share them on.

- `signing`: the signing key and the VC-JWT signer;
- `issuer`: the issuer's public URL and Profile;
- `credentials`: issuing and revoking on award, and building a credential from its row;
- `status`: the Bitstring Status Lists of revocations;
- `verify`: baking into a PNG, and verifying a credential from itself alone;
- `routes`: the credential, badge, key, issuer, status list and `/verify` routes;
- `pages`: the share page and the gallery, with their templates.
"""

from __future__ import annotations

from flask import Flask

from badges.pages import pages
from badges.routes import bp
from badges.signing import Signer, load_key
from core.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Load the signing key (production refuses to start without one); register the routes and the pages."""
    key = load_key(settings)
    app.extensions["badge_signer"] = Signer(key, key.thumbprint())
    app.register_blueprint(bp)
    app.register_blueprint(pages)
