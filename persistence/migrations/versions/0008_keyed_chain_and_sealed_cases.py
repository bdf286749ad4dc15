"""Keyed chains and sealed cases

Each event records the key its hash is an HMAC under (``key_id``; empty for the plain
SHA-256 chains written before) and, for a command sent with an idempotency key, a digest
of that command (``command_digest``), so the same key with another command is refused.
Each case row carries a seal (``seal``): an HMAC over its columns, so a row edited in the
database is refused. Existing rows stay unsealed and their chains plain until
``casework rekey`` verifies and re-keys them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("command_digest", sa.String(length=64), nullable=True))
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seal", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("seal")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("command_digest")
        batch_op.drop_column("key_id")
