"""The share card: each achievement's 1200x630 link-preview PNG, drawn once and stored like any image.

Revision ID: 0008_share_cards
Revises: 0007_image_cache
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_share_cards"
down_revision = "0007_image_cache"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("achievements", sa.Column("share_card_sha256", sa.String(length=64), nullable=True))
    op.create_index("ix_achievements_share_card_sha256", "achievements", ["share_card_sha256"])


def downgrade() -> None:
    op.drop_index("ix_achievements_share_card_sha256", table_name="achievements")
    op.drop_column("achievements", "share_card_sha256")
