"""Generation jobs and idempotency keys; the job that made a storefront or an achievement.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # the tables land with the work they serve


def downgrade() -> None:
    pass
