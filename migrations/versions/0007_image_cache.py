"""Never pay twice for one picture: the exact-request image cache, shared by every process and machine.

Revision ID: 0007_image_cache
Revises: 0006_credentials
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_image_cache"
down_revision = "0006_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.Float(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_image_cache_image_sha256", "image_cache", ["image_sha256"])
    op.create_index("ix_image_cache_created_at", "image_cache", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_image_cache_created_at", table_name="image_cache")
    op.drop_index("ix_image_cache_image_sha256", table_name="image_cache")
    op.drop_table("image_cache")
