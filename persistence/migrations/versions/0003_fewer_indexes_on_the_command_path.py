"""Fewer indexes on the command path

Every index on cases and events costs a page write on every command. The
report indexes of 0002 and the state index go (reports scan), and the
idempotency key's unique index becomes partial, so commands without a key
do not touch it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NOT_NULL = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_name_at")
        batch_op.drop_constraint("uq_events_idempotency_key", type_="unique")
    op.create_index("uq_events_idempotency_key", "events", ["idempotency_key"], unique=True,
                    sqlite_where=NOT_NULL, postgresql_where=NOT_NULL)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_workflow_state")


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_workflow_state", ["workflow", "state"], unique=False)
    op.drop_index("uq_events_idempotency_key", table_name="events")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_events_idempotency_key", ["idempotency_key"])
        batch_op.create_index("ix_events_name_at", ["name", "at"], unique=False)
