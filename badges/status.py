"""Bitstring Status Lists: a credential's `serial` is its place, list `serial // LIST_SIZE + 1`, bit
`serial % LIST_SIZE`; a bit is 1 when the credential is revoked or its row is gone."""

from __future__ import annotations

import base64
import gzip
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from badges.issuer import VC_CONTEXT, issuer_id, timestamp
from core.http_edge import base_url
from models import BadgeCredential

# Bitstring Status List: at least 16 KiB of bits per list, so that one bit says little about whose badge it is.
LIST_SIZE = 16 * 1024 * 8
# A list is dated a little in the past: a verifier whose clock is behind ours would find it "not yet valid".
CLOCK_SKEW = timedelta(minutes=5)


def status_position(serial: int) -> tuple[int, int]:
    """The status list number and the bit index of a credential's serial."""
    return serial // LIST_SIZE + 1, serial % LIST_SIZE


def status_bits(session: Session, status_list: int) -> bytes:
    """The list's bitstring: 1 for every serial up to the latest issued that is revoked or has no row any more."""
    first = (status_list - 1) * LIST_SIZE
    last = session.scalar(select(func.max(BadgeCredential.serial)))
    bits = bytearray(LIST_SIZE // 8)
    if last is None or last < first:
        return bytes(bits)
    end = min(last + 1, first + LIST_SIZE)
    active = set(session.scalars(select(BadgeCredential.serial).where(
        BadgeCredential.serial >= first, BadgeCredential.serial < end, BadgeCredential.revoked_at.is_(None))))
    for serial in range(first, end):
        if serial not in active:  # revoked, or gone with its user or achievement: either way, not valid
            index = serial - first
            bits[index // 8] |= 0x80 >> (index % 8)  # index 0 is the left-most bit
    return bytes(bits)


def status_bit(session: Session, serial: int) -> int:
    """One credential's bit, as `status_bits` sets it, without building the whole list (a full one takes ~150 ms)."""
    last = session.scalar(select(func.max(BadgeCredential.serial))) or 0
    active = session.scalar(select(BadgeCredential.serial).where(
        BadgeCredential.serial == serial, BadgeCredential.revoked_at.is_(None)))
    return int(serial <= last and active is None)


def encode_list(bits: bytes) -> str:
    """Multibase base64url (prefix "u", no padding) of the GZIP of the bits."""
    compressed = gzip.compress(bits, mtime=0)
    return "u" + base64.urlsafe_b64encode(compressed).decode("ascii").rstrip("=")


def decode_list(encoded: str) -> bytes:
    """The bits of an `encodedList`."""
    if not encoded.startswith("u"):
        raise ValueError("encodedList is not multibase base64url")
    data = encoded[1:]
    return gzip.decompress(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))


def bit(bits: bytes, index: int) -> int:
    """Bit `index` of a bitstring, index 0 being the left-most bit of the first byte."""
    return (bits[index // 8] >> (7 - index % 8)) & 1


def last_list(session: Session) -> int:
    """The number of the latest status list in use (1 when none is)."""
    return status_position(session.scalar(select(func.max(BadgeCredential.serial))) or 0)[0]


def status_list_credential(session: Session, status_list: int, now: datetime) -> dict:
    """The BitstringStatusListCredential whose bits are the list's revocations, unsigned, valid from a little before
    `now`."""
    base = base_url()
    return {
        "@context": [VC_CONTEXT],
        "id": f"{base}/status/{status_list}",
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": issuer_id(),
        "validFrom": timestamp(now - CLOCK_SKEW),
        "credentialSubject": {
            "id": f"{base}/status/{status_list}#list",
            "type": "BitstringStatusList",
            "statusPurpose": "revocation",
            "encodedList": encode_list(status_bits(session, status_list)),
        },
    }
