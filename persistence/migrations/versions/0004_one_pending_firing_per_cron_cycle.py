"""One pending firing per cron cycle

A partial unique index: two processes starting at once cannot both store the
next firing of a cron cycle, and finding it no longer scans the pending timers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHERE = sa.text("case_id IS NULL AND status = 'pending'")


def upgrade() -> None:
    # Keep the earliest pending firing of each cycle if a race ever stored two.
    op.execute(
        "UPDATE timers SET status = 'cancelled' WHERE case_id IS NULL AND status = 'pending' "
        "AND id NOT IN (SELECT MIN(id) FROM timers WHERE case_id IS NULL AND status = 'pending' "
        "GROUP BY workflow, name)"
    )
    op.create_index("uq_timers_pending_cron", "timers", ["workflow", "name"], unique=True,
                    sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index("uq_timers_pending_cron", table_name="timers")
