"""Issuing, revoking and building credentials: an award is a `BadgeCredential` row, and the OpenBadgeCredential
is rebuilt from that row whenever it is asked for (its proofs are dated at issuance and Ed25519 and RS256 signatures
are deterministic, so the same row gives the same bytes)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from badges.issuer import OB_CONTEXT, VC_CONTEXT, issuer_profile, subject_id, timestamp
from badges.proofs import as_vc_jwt
from badges.status import status_position
from core.db import find_achievement, find_user, get_session
from core.errors import NotFound
from core.http_edge import base_url
from models import Achievement, BadgeCredential, User, UserAchievement


def _active(session: Session, user_id: int) -> dict[int, BadgeCredential]:
    rows = session.scalars(select(BadgeCredential).where(
        BadgeCredential.user_id == user_id, BadgeCredential.revoked_at.is_(None)))
    return {row.achievement_id: row for row in rows}


def issue(session: Session, user_id: int, achievement_ids: list[int]) -> None:
    """Issue a credential for each achievement the user has no active credential for (the caller commits)."""
    active = _active(session, user_id)
    for achievement_id in dict.fromkeys(achievement_ids):
        if achievement_id not in active:
            session.add(BadgeCredential(id=str(uuid.uuid4()), user_id=user_id, achievement_id=achievement_id,
                                        salt=secrets.token_hex(16)))


def sync(session: Session, user_id: int, achievement_ids: list[int]) -> None:
    """Make the user's active credentials match `achievement_ids`: revoke the others, issue the missing."""
    now = datetime.now(UTC)
    for achievement_id, row in _active(session, user_id).items():
        if achievement_id not in achievement_ids:
            row.revoked_at = now
    issue(session, user_id, achievement_ids)


def find_credential(session: Session, user_id: int, achievement_id: int) -> BadgeCredential:
    """The user's active credential for the achievement, or 404 credential_not_found."""
    row = session.scalar(select(BadgeCredential).join(
        UserAchievement, (UserAchievement.user_id == BadgeCredential.user_id)
        & (UserAchievement.achievement_id == BadgeCredential.achievement_id),
    ).where(BadgeCredential.user_id == user_id, BadgeCredential.achievement_id == achievement_id,
            BadgeCredential.revoked_at.is_(None)).order_by(BadgeCredential.serial.desc()).limit(1))
    if row is None:
        raise NotFound(f"User {user_id} holds no credential for achievement {achievement_id}.",
                       code="credential_not_found")
    return row


def identity_hash(user_id: int, salt: str) -> str:
    """The recipient as Open Badges hashes it: sha256 of the identity followed by the salt."""
    return "sha256$" + hashlib.sha256(f"{user_id}{salt}".encode()).hexdigest()


def well_formed(text: str) -> str:
    """Text with any lone surrogate (an LLM may write "\\ud800") as U+FFFD, as a JavaScript verifier reads it."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def achievement_document(achievement: Achievement) -> dict:
    """The Achievement as credentials embed it, and as its id (`/achievements/{id}`) answers."""
    base = base_url()
    name, occasion, product = (well_formed(text) for text in (achievement.name, achievement.occasion,
                                                              achievement.product_type))
    return {
        "id": f"{base}/achievements/{achievement.id}",
        "type": ["Achievement"],
        "name": name,
        "description": well_formed(achievement.description),
        "criteria": {"narrative": f"Celebrated {occasion} with a purchase in {product}."},
        "image": {"id": f"{base}/get-achievement-image?achievement_id={achievement.id}", "type": "Image",
                  "caption": name},
    }


@dataclass(frozen=True)
class Award:
    """What one credential is built from."""

    row: BadgeCredential
    user: User
    achievement: Achievement


def build_credential(award: Award) -> dict:
    """The OpenBadgeCredential of an issued row (W3C VC 2.0 data model, Open Badges 3.0 context), unsigned."""
    row = award.row
    status_list, index = status_position(row.serial)
    status_url = f"{base_url()}/status/{status_list}"
    return {
        "@context": [VC_CONTEXT, OB_CONTEXT],
        "id": f"urn:uuid:{row.id}",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": well_formed(award.achievement.name),
        "issuer": issuer_profile(),
        "validFrom": timestamp(row.issued_at),
        "credentialSubject": {
            "id": subject_id(award.user.subject_key),
            "type": ["AchievementSubject"],
            "identifier": [{"type": "IdentityObject", "identityHash": identity_hash(row.user_id, row.salt),
                            "identityType": "systemId", "hashed": True, "salt": row.salt}],
            "achievement": achievement_document(award.achievement),
        },
        "credentialStatus": {
            "id": f"{status_url}#{index}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": "revocation",
            "statusListIndex": str(index),
            "statusListCredential": status_url,
        },
    }


def held_award(user_id: int, achievement_id: int) -> Award:
    """The user's active award of the achievement, or the 404 that says what is missing."""
    user = find_user(user_id)
    achievement = find_achievement(achievement_id)
    return Award(find_credential(get_session(), user_id, achievement_id), user, achievement)


def signed_credential(user_id: int, achievement_id: int) -> tuple[dict, str, Award]:
    """The credential of the user's award, as JSON (unsigned) and as a VC-JWT, with what it was built from."""
    award = held_award(user_id, achievement_id)
    credential = build_credential(award)
    return credential, as_vc_jwt(credential, award.row.issued_at), award
