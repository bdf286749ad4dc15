"""The due index holds pending timers only

``ix_timers_status_due (status, due_at)`` moved an entry on every cancel and
every firing (from the pending part to the cancelled or fired part) and grew
with every timer ever stored. A partial index on ``due_at`` for pending timers
loses the entry instead, serves the claim query in due order, and stays as
small as the work still to do.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_timers_status_due", table_name="timers")
    op.create_index("ix_timers_pending_due", "timers", ["due_at", "id"],
                    sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index("ix_timers_pending_due", table_name="timers")
    op.create_index("ix_timers_status_due", "timers", ["status", "due_at"])
