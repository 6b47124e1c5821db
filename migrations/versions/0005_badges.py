"""Verifiable badges: issued credentials and their status-list entries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import secrets
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# As in 0001: BigInteger ids (INTEGER on SQLite, which only auto-increments that), timezone-aware timestamps.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "badge_credentials",
        sa.Column("serial", Id, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("achievement_id", Id, nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("issued_at", Timestamp, nullable=False),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("serial"),
        sa.UniqueConstraint("id"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["achievement_id"], ["achievements.id"], ondelete="CASCADE"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_badge_credentials_user_id", "badge_credentials", ["user_id"])
    op.create_index("ix_badge_credentials_achievement_id", "badge_credentials", ["achievement_id"])
    issue_for_existing_awards()


def issue_for_existing_awards() -> None:
    """Awards made before badges existed get their credential too, dated when they were awarded."""
    awarded = sa.table("user_achievements", sa.column("user_id"), sa.column("achievement_id"),
                       sa.column("awarded_at", Timestamp))
    awards = op.get_bind().execute(sa.select(awarded.c.user_id, awarded.c.achievement_id, awarded.c.awarded_at)
                                   .order_by(awarded.c.awarded_at, awarded.c.user_id, awarded.c.achievement_id)).all()
    credentials = sa.table("badge_credentials", sa.column("id"), sa.column("user_id"), sa.column("achievement_id"),
                           sa.column("salt"), sa.column("issued_at", Timestamp))
    if awards:
        op.bulk_insert(credentials, [
            {"id": str(uuid.uuid4()), "user_id": user_id, "achievement_id": achievement_id,
             "salt": secrets.token_hex(16), "issued_at": awarded_at}
            for user_id, achievement_id, awarded_at in awards
        ])


def downgrade() -> None:
    op.drop_table("badge_credentials")
