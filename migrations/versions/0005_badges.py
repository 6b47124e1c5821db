"""Verifiable badges: issued credentials and their status-list entries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # the tables land with the work they serve


def downgrade() -> None:
    pass
