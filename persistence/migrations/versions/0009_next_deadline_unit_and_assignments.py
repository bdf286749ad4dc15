"""The next deadline and the lead unit on each case, and who holds it

Search and worklists read open cases by their next deadline, overall and per lead unit,
as index ranges (``ix_cases_open_due``, ``ix_cases_unit_due``, partial: open cases only);
``assignments`` lists who holds each case (a person or unit in a slot, or a stand-in for
the time of a delegation), indexed by who. Existing cases get the columns empty; the next
command on a case fills them (``casework recompute-deadlines --all`` fills them all).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unit", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("next_due_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("next_deadline", sa.String(length=64), nullable=True))
    op.create_index("ix_cases_open_due", "cases", ["next_due_at", "id"],
                    sqlite_where=sa.text("final = 0"), postgresql_where=sa.text("NOT final"))
    op.create_index("ix_cases_unit_due", "cases", ["unit", "next_due_at", "id"],
                    sqlite_where=sa.text("final = 0"), postgresql_where=sa.text("NOT final"))
    op.create_table(
        "assignments",
        sa.Column("case_id", sa.String(length=36), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("slot", sa.String(length=64), nullable=False),
        sa.Column("who", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("case_id", "slot", "who"),
    )
    op.create_index("ix_assignments_who", "assignments", ["who", "case_id"])


def downgrade() -> None:
    op.drop_index("ix_assignments_who", table_name="assignments")
    op.drop_table("assignments")
    op.drop_index("ix_cases_unit_due", table_name="cases")
    op.drop_index("ix_cases_open_due", table_name="cases")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("next_deadline")
        batch_op.drop_column("next_due_at")
        batch_op.drop_column("unit")
