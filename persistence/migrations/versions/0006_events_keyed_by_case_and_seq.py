"""Events keyed by (case_id, seq)

The surrogate ``id`` goes: an event is found by its case and number, which
were already unique. On SQLite the table becomes WITHOUT ROWID, stored in
(case, seq) order, so a command writes one b-tree for its event instead of the
table and the unique index (one page less per command), and a case's history
sits on adjacent pages. On PostgreSQL the unique constraint becomes the
primary key: one index less to maintain per event.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEYED = sa.text("idempotency_key IS NOT NULL")
COLUMNS = ("case_id", "seq", "kind", "name", "from_state", "to_state", "actor", "role", "at",
           "changes", "details", "idempotency_key", "prev_hash", "hash")


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("case_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("from_state", sa.String(length=128), nullable=True),
        sa.Column("to_state", sa.String(length=128), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("role", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
    ]


def _rebuild_on_sqlite(*items: Any, **table_kw: Any) -> None:
    """SQLite cannot change a table's key in place: build the new table, copy, swap."""
    op.create_table("_events_new", *items, *_columns(),
                    sa.ForeignKeyConstraint(["case_id"], ["cases.id"]), **table_kw)
    cols = ", ".join(COLUMNS)
    op.execute(f"INSERT INTO _events_new ({cols}) SELECT {cols} FROM events ORDER BY case_id, seq")
    op.drop_table("events")
    op.rename_table("_events_new", "events")
    op.create_index("uq_events_idempotency_key", "events", ["idempotency_key"], unique=True,
                    sqlite_where=KEYED)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_on_sqlite(sa.PrimaryKeyConstraint("case_id", "seq"), sqlite_with_rowid=False)
        return
    op.drop_constraint("uq_events_case_seq", "events", type_="unique")
    op.drop_constraint("events_pkey", "events", type_="primary")
    op.drop_column("events", "id")
    op.create_primary_key("events_pkey", "events", ["case_id", "seq"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_on_sqlite(sa.Column("id", sa.Integer(), nullable=False),
                           sa.PrimaryKeyConstraint("id"),
                           sa.UniqueConstraint("case_id", "seq", name="uq_events_case_seq"))
        return
    op.drop_constraint("events_pkey", "events", type_="primary")
    op.add_column("events", sa.Column("id", sa.Integer(), sa.Identity(), nullable=False))
    op.create_primary_key("events_pkey", "events", ["id"])
    op.create_unique_constraint("uq_events_case_seq", "events", ["case_id", "seq"])
