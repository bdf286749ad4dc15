"""When a case closed, and indexes for reports

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closed_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_cases_workflow_opened", ["workflow", "opened_at"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_name_at", ["name", "at"], unique=False)
    # Cases already closed get the time of their last event.
    op.execute(
        "UPDATE cases SET closed_at = (SELECT MAX(e.at) FROM events e WHERE e.case_id = cases.id) "
        "WHERE final"
    )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_name_at")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_workflow_opened")
        batch_op.drop_column("closed_at")
