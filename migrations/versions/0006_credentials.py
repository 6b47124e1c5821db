"""Credentials that verify anywhere: each user's random subject key, from which credentialSubject.id is derived.

Revision ID: 0006_credentials
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0006_credentials"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: SQLite would make it NOT NULL by rebuilding `users`, and dropping the old table cascades (foreign
    # keys are on) to every award and credential.
    op.add_column("users", sa.Column("subject_key", sa.String(length=36), nullable=True))
    users = sa.table("users", sa.column("id"), sa.column("subject_key"))
    connection = op.get_bind()
    ids = connection.execute(sa.select(users.c.id)).scalars().all()
    if ids:  # a key of its own for each user already there
        connection.execute(users.update().where(users.c.id == sa.bindparam("user_id"))
                           .values(subject_key=sa.bindparam("key")),
                           [{"user_id": user_id, "key": str(uuid.uuid4())} for user_id in ids])


def downgrade() -> None:
    op.drop_column("users", "subject_key")
