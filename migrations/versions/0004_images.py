"""Image delivery: what lets removing unused files never race a writer.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # the tables land with the work they serve


def downgrade() -> None:
    pass
