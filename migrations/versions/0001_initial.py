"""The initial schema: users, storefronts, achievements and who holds which.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# As in models.py: SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere lets ids reach 2^63-1.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# models.UTCDateTime stores this type; the migration keeps to plain SQLAlchemy types so it never changes.
Timestamp = sa.DateTime(timezone=True)


def image_columns() -> list[sa.Column]:
    return [
        sa.Column("image_sha256", sa.String(length=64), nullable=True),
        sa.Column("image_size", sa.Integer(), nullable=True),
        sa.Column("image_width", sa.Integer(), nullable=True),
        sa.Column("image_height", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("recommendations", sa.JSON(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "achievements",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("occasion", sa.String(length=200), nullable=False),
        sa.Column("product_type", sa.String(length=200), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        *image_columns(),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_achievements_image_sha256", "achievements", ["image_sha256"])
    op.create_table(
        "storefronts",
        sa.Column("id", Id, nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("name", sa.String(length=400), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("style", sa.String(length=200), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        *image_columns(),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_storefronts_image_sha256", "storefronts", ["image_sha256"])
    op.create_index("ix_storefronts_user_id", "storefronts", ["user_id"])
    op.create_table(
        "user_achievements",
        sa.Column("user_id", Id, nullable=False),
        sa.Column("achievement_id", Id, nullable=False),
        sa.Column("awarded_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["achievement_id"], ["achievements.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "achievement_id"),
    )
    op.create_index("ix_user_achievements_achievement_id", "user_achievements", ["achievement_id"])


def downgrade() -> None:
    op.drop_table("user_achievements")
    op.drop_table("storefronts")
    op.drop_table("achievements")
    op.drop_table("users")
