"""The ledger of provider calls, and the shared counters of rate limits, cool-downs and credits.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # the tables land with the work they serve


def downgrade() -> None:
    pass
