"""Data Integrity proofs with the cryptosuite `eddsa-rdfc-2022` (W3C "Data Integrity EdDSA Cryptosuites v1.0"), and
the Multikey encoding of Ed25519 keys.

    proof config = the proof's options (no proofValue) with the document's @context
    signed bytes = SHA-256(RDFC-1.0(proof config)) || SHA-256(RDFC-1.0(document without proof))
    proofValue   = "z" + base58btc(Ed25519 signature)
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from badges.rdfc import Canonicalizer

CRYPTOSUITE = "eddsa-rdfc-2022"
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
ED25519_PUB = b"\xed\x01"  # multicodec ed25519-pub, as its varint
ED25519_PRIV = b"\x80\x26"  # multicodec ed25519-priv (0x1300), as its varint
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    """base58btc (the Bitcoin alphabet), leading zero bytes as '1'."""
    number, digits = int.from_bytes(data, "big"), []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_BASE58[rest])
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """The bytes of base58btc text; ValueError on a character outside the alphabet."""
    number = 0
    for char in text:
        number = number * 58 + _BASE58.index(char)
    return b"\0" * (len(text) - len(text.lstrip("1"))) + number.to_bytes((number.bit_length() + 7) // 8, "big")


def public_key_multibase(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The Multikey form of an Ed25519 public key: "z6Mk..."."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return "z" + b58encode(ED25519_PUB + public.public_bytes(Encoding.Raw, PublicFormat.Raw))


def secret_key_multibase(key: Ed25519PrivateKey) -> str:
    """The Multikey form of an Ed25519 private key (seed then public key), as the JS libraries export it."""
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return "z" + b58encode(ED25519_PRIV + seed + b58decode(public_key_multibase(key)[1:])[2:])


def multikey_document(key: Ed25519PrivateKey | Ed25519PublicKey, key_id: str, controller: str) -> dict:
    """What a verification method's URL answers: the public key as a Multikey, with its controller."""
    return {"@context": MULTIKEY_CONTEXT, "id": key_id, "type": "Multikey", "controller": controller,
            "publicKeyMultibase": public_key_multibase(key)}


@dataclass(frozen=True)
class ProofData:
    """Every intermediate value of one proof, as test vectors list them."""

    canonical_proof: str
    canonical_document: str

    @property
    def proof_hash(self) -> bytes:
        return hashlib.sha256(self.canonical_proof.encode("utf-8")).digest()

    @property
    def document_hash(self) -> bytes:
        return hashlib.sha256(self.canonical_document.encode("utf-8")).digest()

    @property
    def signed_bytes(self) -> bytes:
        return self.proof_hash + self.document_hash


def proof_data(document: dict, proof: dict, canonicalizer: Canonicalizer) -> ProofData:
    """Canonicalize the proof's options and the document as the cryptosuite says (UnsafeDocument if unsafe)."""
    if proof.get("type") != "DataIntegrityProof" or proof.get("cryptosuite") != CRYPTOSUITE:
        raise ValueError(f"not a DataIntegrityProof of cryptosuite {CRYPTOSUITE}")
    unsecured = {key: value for key, value in document.items() if key != "proof"}
    config = {key: value for key, value in proof.items() if key != "proofValue"}
    if "@context" in unsecured:
        config["@context"] = unsecured["@context"]
    # PyLD may fill in what it reads: canonicalize copies.
    return ProofData(canonicalizer.canonize(copy.deepcopy(config)), canonicalizer.canonize(copy.deepcopy(unsecured)))


def add_proof(document: dict, key: Ed25519PrivateKey, verification_method: str, created: str,
              canonicalizer: Canonicalizer) -> dict:
    """The document with `proof`: a one-element array (the Open Badges JSON Schema's form) of a signed proof."""
    proof = {"type": "DataIntegrityProof", "cryptosuite": CRYPTOSUITE, "created": created,
             "verificationMethod": verification_method, "proofPurpose": "assertionMethod"}
    signature = key.sign(proof_data(document, proof, canonicalizer).signed_bytes)
    unsecured = {name: value for name, value in document.items() if name != "proof"}
    return {**unsecured, "proof": [{**proof, "proofValue": "z" + b58encode(signature)}]}


def single_proof(document: dict) -> dict | None:
    """The document's only proof (a lone object or a one-element array), or None."""
    proofs = document.get("proof")
    proofs = proofs if isinstance(proofs, list) else [proofs]
    return proofs[0] if len(proofs) == 1 and isinstance(proofs[0], dict) else None


def verify_proof(document: dict, public_key: Ed25519PublicKey, canonicalizer: Canonicalizer) -> bool:
    """Whether the document's single eddsa-rdfc-2022 proof is a valid signature of `public_key` over it."""
    proof = single_proof(document)
    value = proof.get("proofValue") if proof else None
    if not isinstance(value, str) or not value.startswith("z"):
        return False
    try:
        public_key.verify(b58decode(value[1:]), proof_data(document, proof, canonicalizer).signed_bytes)
    except InvalidSignature:
        return False
    return True


def public_key_from_multibase(value: str) -> Ed25519PublicKey:
    """The Ed25519 public key of a Multikey "z6Mk..." (ValueError for anything else)."""
    raw = b58decode(value[1:]) if value.startswith("z") else b""
    if len(raw) != 34 or raw[:2] != ED25519_PUB:
        raise ValueError("not an Ed25519 Multikey")
    return Ed25519PublicKey.from_public_bytes(raw[2:])
