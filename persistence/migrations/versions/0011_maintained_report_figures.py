"""Maintained report figures

The figures a workflow's report declares are kept per local day and group in
``report_figures`` by each command's transaction; ``report_stays`` keeps each completed
stay in a state for the time-in-state percentiles; ``report_plans`` names the report
definition the figures follow. The overdue cases get an index of their own. A database
upgraded to this revision has no figures yet: its reports count from the events until
``casework rebuild-figures`` builds them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cases_overdue", "cases", ["workflow", "overdue_since"],
                    sqlite_where=sa.text("final = 0 AND overdue_since IS NOT NULL"),
                    postgresql_where=sa.text("NOT final AND overdue_since IS NOT NULL"))
    op.create_table(
        "report_figures",
        sa.Column("workflow", sa.String(length=64), primary_key=True),
        sa.Column("dim", sa.String(length=64), primary_key=True),
        sa.Column("day", sa.String(length=10), primary_key=True),
        sa.Column("figure", sa.String(length=160), primary_key=True),
        sa.Column("value", sa.String(length=512), primary_key=True),
        sa.Column("shard", sa.Integer(), primary_key=True),
        sa.Column("n", sa.Float(), nullable=False),
        sa.Column("s", sa.Float(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "report_stays",
        sa.Column("workflow", sa.String(length=64), primary_key=True),
        sa.Column("state", sa.String(length=128), primary_key=True),
        sa.Column("secs", sa.Float(), primary_key=True),
        sa.Column("day", sa.String(length=10), primary_key=True),
        sa.Column("case_id", sa.String(length=36), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "report_plans",
        sa.Column("workflow", sa.String(length=64), primary_key=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("built_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_index("ix_cases_overdue", table_name="cases")
    op.drop_table("report_plans")
    op.drop_table("report_stays")
    op.drop_table("report_figures")
