"""The badge keys, and the VC-JWT signer (Open Badges 3.0, section 8.2).

- `BADGE_SIGNING_KEY` signs the VC-JWTs: RSA (RS256, what every Open Badges verifier must support; development
  makes one), P-256 (ES256) or Ed25519 (EdDSA), chosen by the key's type.
- `BADGE_DI_SIGNING_KEY` (Ed25519) signs the embedded Data Integrity proofs.
Each is PEM text or the path of a PEM file. Development makes each once under instance/ when unset; production
refuses to start without them. The Ed25519 key earlier versions signed their VC-JWTs with (instance/
badge-signing-key.pem in development) is the Data Integrity key now, so that their credentials keep verifying.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from flask import current_app
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from core.settings import Settings

log = logging.getLogger(__name__)

JWT_KEY_FILE = "badge-jwt-key.pem"
DI_KEY_FILE = "badge-signing-key.pem"  # the name earlier versions gave their Ed25519 key: it keeps its file
Key = RSAKey | ECKey | OKPKey
ALGORITHMS = {RSAKey: "RS256", ECKey: "ES256", OKPKey: "EdDSA"}

# joserfc flags "EdDSA" as superseded by RFC 9864's "Ed25519" (the same signature); the Open Badges verifiers
# only know "EdDSA", so we keep that name, on a registry of our own that does not warn about it.
_eddsa = copy.copy(JWSRegistry.algorithms["EdDSA"])
_eddsa.security_warning = None


class _Registry(JWSRegistry):
    algorithms = {**JWSRegistry.algorithms, "EdDSA": _eddsa}


REGISTRY = _Registry(algorithms=list(ALGORITHMS.values()))


# cryptography key type -> its name, and the joserfc key type each setting accepts.
KEY_TYPE_NAMES = {rsa.RSAPrivateKey: "RSA", ec.EllipticCurvePrivateKey: "EC P-256",
                  ed25519.Ed25519PrivateKey: "Ed25519"}
JWT_KEY_TYPES = {rsa.RSAPrivateKey: RSAKey, ec.EllipticCurvePrivateKey: ECKey, ed25519.Ed25519PrivateKey: OKPKey}
DI_KEY_TYPES = {ed25519.Ed25519PrivateKey: OKPKey}


def _read_pem(value: str) -> bytes:
    pem = value.replace("\\n", "\n")  # a one-line environment variable may carry the PEM's newlines escaped
    return pem.encode() if pem.lstrip().startswith("-----BEGIN") else Path(value).read_bytes()


def _private_key(value: str, name: str, kinds: dict[type, type]) -> Key:
    """The PEM of setting `name` as a joserfc key, if it is a private key of one of `kinds` (cryptography type ->
    joserfc type); else a start-up error that says what the setting must be."""
    try:
        pem = _read_pem(value)
        parsed = load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError):
        parsed = None
    for kind, jose_kind in kinds.items():
        if isinstance(parsed, kind) and (kind is not ec.EllipticCurvePrivateKey
                                         or isinstance(parsed.curve, ec.SECP256R1)):
            return jose_kind.import_key(pem)
    allowed = ", ".join(KEY_TYPE_NAMES[kind] for kind in kinds)
    raise SystemExit(f"{name} must be a private key ({allowed}): PEM text, or the path of a PEM file")


def _load(settings: Settings, value: str | None, name: str, kinds: dict, file: str, make: Callable[[], bytes]):
    if value:
        return _private_key(value, name, kinds)
    if settings.is_production:
        raise SystemExit(f"APP_ENV=production needs {name} to be set (see README, Verifiable badges)")
    path = Path(settings.image_dir).parent / file
    return _private_key(_development_key(path, make, name).decode(), name, kinds)


def _development_key(path: Path, make: Callable[[], bytes], name: str) -> bytes:
    """The PEM at `path`, made first if missing: readable by us alone, and written whole before it appears."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(make())
        try:
            os.link(tmp, path)  # fails if another worker got there first: then its key is the key
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    log.warning("%s is not set: badges are signed with the development key %s", name, path)
    return path.read_bytes()


@dataclass(frozen=True)
class BadgeKeys:
    """The VC-JWT key and the Data Integrity key."""

    jwt: Key
    di: OKPKey

    @classmethod
    def load(cls, settings: Settings) -> BadgeKeys:
        """BADGE_SIGNING_KEY and BADGE_DI_SIGNING_KEY, or the development keys (production refuses to go without)."""
        return cls(
            _load(settings, settings.badge_signing_key, "BADGE_SIGNING_KEY", JWT_KEY_TYPES, JWT_KEY_FILE,
                  lambda: RSAKey.generate_key(2048).as_pem(private=True)),
            _load(settings, settings.badge_di_signing_key, "BADGE_DI_SIGNING_KEY", DI_KEY_TYPES, DI_KEY_FILE,
                  lambda: OKPKey.generate_key("Ed25519").as_pem(private=True)),
        )

    @property
    def algorithm(self) -> str:
        return ALGORITHMS[type(self.jwt)]

    @property
    def jwt_key_name(self) -> str:
        """The last segment of the VC-JWT key's URL: its RFC 7638 thumbprint."""
        return self.jwt.thumbprint()

    def public_jwk(self, kid: str) -> dict:
        """The VC-JWT key's public half as a JWK with its `kid` URL."""
        return {**self.jwt.as_dict(private=False), "kid": kid, "use": "sig", "alg": self.algorithm}

    def earlier_keys(self) -> dict[str, OKPKey]:
        """The Ed25519 keys that may have signed VC-JWTs of the earlier form, by their `kid` then (the thumbprint)."""
        keys = [self.di, self.jwt] if isinstance(self.jwt, OKPKey) else [self.di]
        return {key.thumbprint(): OKPKey.import_key(key.as_dict(private=False)) for key in keys}

    def sign_jwt(self, credential: dict, kid: str, issued_at: datetime) -> str:
        """The credential as a VC-JWT by Open Badges 3.0 section 8.2."""
        header = {"alg": self.algorithm, "typ": "JWT", "kid": kid}
        return jwt.encode(header, jwt_claims(credential, issued_at), self.jwt, registry=REGISTRY)


def numeric_date(value: str) -> int:
    """A VC date (`2026-12-01T22:36:52Z`) as a JWT NumericDate."""
    return int(datetime.fromisoformat(value).timestamp())


def jwt_claims(credential: dict, issued_at: datetime) -> dict:
    """The credential's properties plus the registered claims section 8.2 asks for, each taken from it."""
    issuer = credential["issuer"]
    claims = {**credential, "iss": issuer["id"] if isinstance(issuer, dict) else issuer, "jti": credential["id"],
              "sub": credential["credentialSubject"]["id"], "nbf": numeric_date(credential["validFrom"]),
              "iat": int(issued_at.timestamp())}  # the issuance, not now: one row, one token (RS256 is deterministic)
    if "validUntil" in credential:
        claims["exp"] = numeric_date(credential["validUntil"])
    return claims


def badge_keys() -> BadgeKeys:
    """The app's badge keys."""
    return current_app.extensions["badge_keys"]
