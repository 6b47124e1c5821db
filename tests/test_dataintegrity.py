"""eddsa-rdfc-2022 proofs: 1EdTech's test vector byte for byte, and the canonical N-Quads the JS verifiers expect where
PyLD alone would differ (escapes, UTF-16 order, undefined terms)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from badges import dataintegrity, rdfc

VECTOR = Path(__file__).parent / "vectors" / "eddsa-rdfc-2022"
VC2 = ["https://www.w3.org/ns/credentials/v2", "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"]


@pytest.fixture(scope="module")
def vector() -> dict:
    return json.loads((VECTOR / "ob-impl-guide-eddsa-rdfc-2022.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def canonicalizer() -> rdfc.Canonicalizer:
    return rdfc.Canonicalizer(rdfc.context_loader(rdfc.CONTEXTS, VECTOR))


def test_the_1edtech_implementation_guide_vector_byte_for_byte(vector, canonicalizer):
    private = bytes.fromhex(vector["privateKeyHex"])  # as JS keeps it: the 32-byte seed, then the public key
    key = Ed25519PrivateKey.from_private_bytes(private[:32])
    assert dataintegrity.public_key_multibase(key) == vector["publicKeyMultibase"]
    assert dataintegrity.secret_key_multibase(key) == vector["secretKeyMultibase"]
    assert private[32:].hex() == vector["publicKeyHex"]

    document, options = vector["credentialWithCryptosuiteContext"], vector["proofOptions"]
    data = dataintegrity.proof_data(document, options, canonicalizer)
    assert data.canonical_proof == (VECTOR / vector["canonicalProofFile"]).read_text(encoding="utf-8")
    assert data.canonical_document == (VECTOR / vector["canonicalDocumentFile"]).read_text(encoding="utf-8")
    assert data.proof_hash.hex() == vector["proofHashHex"]
    assert data.document_hash.hex() == vector["documentHashHex"]
    assert key.sign(data.signed_bytes).hex() == vector["signatureHex"]

    signed = dataintegrity.add_proof(document, key, options["verificationMethod"], options["created"], canonicalizer)
    assert signed["proof"] == [{**options, "proofValue": vector["proofValue"]}]
    assert dataintegrity.verify_proof(signed, key.public_key(), canonicalizer)
    assert not dataintegrity.verify_proof({**signed, "name": "Teamwork Badge!"}, key.public_key(), canonicalizer)
    assert not dataintegrity.verify_proof(signed, Ed25519PrivateKey.generate().public_key(), canonicalizer)


def test_the_vector_files_are_the_published_ones(vector):
    # The guide publishes the hashes: the canonical files kept here hash to them.
    for name, digest in [("canonicalProofFile", "proofHashHex"), ("canonicalDocumentFile", "documentHashHex")]:
        assert hashlib.sha256((VECTOR / vector[name]).read_bytes()).hexdigest() == vector[digest]


@pytest.mark.parametrize("folder", [rdfc.CONTEXTS, VECTOR])
def test_context_files_match_their_manifest(folder):
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for url, entry in manifest.items():
        assert hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], url
        assert entry["license"] and entry["package"]


def test_control_characters_are_escaped_as_rdfc_1_0_writes_them():
    assert rdfc.escape_literal('a\bb\tc\nd\fe\rf"g\\h\x00i\x07j\x1fk\x7fl') == \
        'a\\bb\\tc\\nd\\fe\\rf\\"g\\\\h\\u0000i\\u0007j\\u001Fk\\u007Fl'
    assert rdfc.escape_literal("é 漢字 😀") == "é 漢字 😀"  # only controls and the two specials
    assert rdfc.escape_iri("https://x.example/a b<c>{d}|e^f`g\\h\"i") == \
        "https://x.example/a\\u0020b\\u003Cc\\u003E\\u007Bd\\u007D\\u007Ce\\u005Ef\\u0060g\\u005Ch\\u0022i"


def test_n_quads_sort_by_utf16_code_units_as_javascript_does():
    # U+FF21 is above the surrogates (U+D83D) an emoji is made of in UTF-16, below it by code point.
    lines = [rdfc.NQuad('_:a <p> "\uff21" .\n'), rdfc.NQuad('_:a <p> "\U0001f600" .\n')]
    assert sorted(lines) == [lines[1], lines[0]]
    assert sorted(map(str, lines)) == [lines[0], lines[1]]  # Python's own order differs


def credential(name: str) -> dict:
    return {"@context": VC2, "id": "urn:uuid:2b6e6f5c-2d7e-4a51-9c3b-0a1b2c3d4e5f",
            "type": ["VerifiableCredential", "OpenBadgeCredential"],
            "issuer": {"id": "https://badges.example/issuer", "type": ["Profile"], "name": "Shop"},
            "validFrom": "2026-12-01T00:00:00Z", "name": name,
            "credentialSubject": {"type": ["AchievementSubject"], "achievement": {
                "id": "https://badges.example/achievements/1", "type": ["Achievement"], "name": name,
                "description": name, "criteria": {"narrative": name}}}}


def test_canonical_form_of_a_name_with_emoji_controls_and_private_use_characters():
    name = "Caf\u00e9 \u6f22\u5b57 \U0001f600\uff21\ue000 bell\x07 tab\t"
    quads = rdfc.Canonicalizer().canonize(credential(name))
    assert '"Caf\u00e9 \u6f22\u5b57 \U0001f600\uff21\ue000 bell\\u0007 tab\\t"' in quads
    lines = quads.splitlines(keepends=True)
    assert lines == sorted(lines, key=lambda line: line.encode("utf-16-be", "surrogatepass"))


def test_safe_mode_refuses_what_the_verifiers_refuse():
    canonicalizer = rdfc.Canonicalizer()
    canonicalizer.canonize(credential("ok"))
    for broken in [{**credential("x"), "nickname": "undefined term"},
                   {**credential("x"), "type": ["VerifiableCredential", "UnknownType"]},
                   {**credential("x"), "id": "relative/id"},
                   {**credential("x"), "id": "https://badges.example/a space"}]:
        with pytest.raises(rdfc.UnsafeDocument):
            canonicalizer.canonize(broken)


def test_base58_round_trip_keeps_leading_zeros():
    for data in [b"", b"\0", b"\0\0\x01", bytes(range(256))]:
        assert dataintegrity.b58decode(dataintegrity.b58encode(data)) == data
    assert dataintegrity.b58encode(b"hello world") == "StV1DL6CwTryKyV"
