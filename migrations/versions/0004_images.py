"""Image delivery: what lets removing unused files never race a writer.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    # Every hash a row already uses gets its images row, so the remover can lock it like any new one.
    op.execute(
        "INSERT INTO images (sha256, size, created_at) "
        "SELECT image_sha256, COALESCE(MAX(image_size), 0), CURRENT_TIMESTAMP FROM ("
        " SELECT image_sha256, image_size FROM storefronts WHERE image_sha256 IS NOT NULL"
        " UNION ALL SELECT image_sha256, image_size FROM achievements WHERE image_sha256 IS NOT NULL"
        ") AS used GROUP BY image_sha256"
    )


def downgrade() -> None:
    op.drop_table("images")
