"""The badge signing key (BADGE_SIGNING_KEY, or a development key made once) and the signer of VC-JWTs."""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from core.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "badge-signing-key.pem"
ALG = "EdDSA"

# joserfc flags "EdDSA" as superseded by RFC 9864's "Ed25519" (the same signature); PyJWT and the Open Badges
# verifiers only know "EdDSA", so we keep that name, on a registry of our own that does not warn about it.
_eddsa = copy.copy(JWSRegistry.algorithms[ALG])
_eddsa.security_warning = None


class _Registry(JWSRegistry):
    algorithms = {**JWSRegistry.algorithms, ALG: _eddsa}


REGISTRY = _Registry(algorithms=[ALG])


def load_key(settings: Settings) -> OKPKey:
    """BADGE_SIGNING_KEY (PEM text, or a path to a PEM file); in development, a key made once under instance/."""
    value = settings.badge_signing_key
    if value:
        pem = value.replace("\\n", "\n")  # a one-line environment variable may carry the PEM's newlines escaped
        try:
            if not pem.lstrip().startswith("-----BEGIN"):
                pem = Path(value).read_text()
            key = OKPKey.import_key(pem)
        except (OSError, ValueError, TypeError, JoseError):
            key = None
        if key is None or key.curve_name != "Ed25519" or not key.is_private:
            raise SystemExit("BADGE_SIGNING_KEY must be an Ed25519 private key: PEM text, or the path of a PEM file")
        return key
    if settings.is_production:
        raise SystemExit("APP_ENV=production needs BADGE_SIGNING_KEY (an Ed25519 private key, PEM) to be set")
    return OKPKey.import_key(_development_key(Path(settings.image_dir).parent / KEY_FILE))


def _development_key(path: Path) -> bytes:
    """The PEM at `path`, made first if missing: readable by us alone, and written whole before it appears."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = OKPKey.generate_key("Ed25519").as_pem(private=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            os.link(tmp, path)  # fails if another worker got there first: then its key is the key
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    log.warning("BADGE_SIGNING_KEY is not set: badges are signed with the development key %s", path)
    return path.read_bytes()


@dataclass(frozen=True)
class Signer:
    key: OKPKey
    kid: str

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK, with its kid, for /.well-known/jwks.json."""
        return {**self.key.as_dict(private=False), "kid": self.kid, "use": "sig", "alg": ALG}

    def sign(self, credential: dict) -> str:
        """The credential as a VC-JWT: its claims set is the credential itself (VC-JOSE-COSE)."""
        header = {"alg": ALG, "typ": "vc+jwt", "kid": self.kid}
        return jwt.encode(header, credential, self.key, registry=REGISTRY)


def signer() -> Signer:
    """The app's badge signer."""
    return current_app.extensions["badge_signer"]
