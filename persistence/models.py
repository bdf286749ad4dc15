"""The tables, defined with SQLModel.

Times are stored as naive UTC (``DateTime`` without zone) on both databases.

The hot path uses SQLAlchemy Core statements on these tables (``Model.__table__``);
SQLModel keeps the schema in one typed place.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


class WorkflowVersionRow(SQLModel, table=True):
    """A workflow definition as it was when cases were opened under it."""

    __tablename__ = "workflow_versions"

    name: str = Field(primary_key=True, max_length=64)
    version: str = Field(primary_key=True, max_length=32)
    definition: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(default="", max_length=512)
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class CaseRow(SQLModel, table=True):
    """One case: its state, its data (JSON) and the head of its event chain.

    Few indexes: each costs a page write when its columns change. The open cases are
    indexed by their next deadline, overall and per lead unit, so "due this week in my
    unit" is an index range; a command that changes none of those columns does not touch
    those indexes (see :data:`persistence.sql.CASE_UPDATE`).
    """

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_workflow_opened", "workflow", "opened_at"),
        Index("ix_cases_open_due", "next_due_at", "id",
              sqlite_where=text("final = 0"), postgresql_where=text("NOT final")),
        Index("ix_cases_unit_due", "unit", "next_due_at", "id",
              sqlite_where=text("final = 0"), postgresql_where=text("NOT final")),
        # The overdue cases (reports, supervision): few, and written only when one becomes
        # or stops being overdue.
        Index("ix_cases_overdue", "workflow", "overdue_since",
              sqlite_where=text("final = 0 AND overdue_since IS NOT NULL"),
              postgresql_where=text("NOT final AND overdue_since IS NOT NULL")),
    )

    id: str = Field(primary_key=True, max_length=36)
    workflow: str = Field(max_length=64)
    version: str = Field(max_length=32)
    state: str = Field(max_length=128)
    final: bool = False
    data: str = Field(sa_column=Column(Text, nullable=False))
    escalation_level: int = 0
    opened_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    row_version: int = 1
    last_seq: int = 0
    last_hash: str = Field(default="", max_length=64)
    clocks: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    at_risk: bool = False
    overdue_since: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    party_key: str | None = Field(default=None, max_length=64, index=True)
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    # "key id:HMAC" over every other column: a row edited outside the engine is refused.
    seal: str | None = Field(default=None, max_length=100)
    # Kept with every write, for search and worklists: the lead unit, the next deadline.
    unit: str | None = Field(default=None, max_length=128)
    next_due_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    next_deadline: str | None = Field(default=None, max_length=64)


class EventRow(SQLModel, table=True):
    """One step of a case's history; append-only, chained by hash."""

    __tablename__ = "events"
    # Keyed by (case, seq): on SQLite the table is stored in that order (WITHOUT ROWID), so
    # an event costs one b-tree, not a table plus a unique index, and a case's history is
    # read from adjacent rows.
    __table_args__ = (
        # Partial: a command without a key does not touch this index.
        Index("uq_events_idempotency_key", "idempotency_key", unique=True,
              sqlite_where=text("idempotency_key IS NOT NULL"),
              postgresql_where=text("idempotency_key IS NOT NULL")),
        {"sqlite_with_rowid": False},
    )

    case_id: str = Field(foreign_key="cases.id", primary_key=True, max_length=36)
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(max_length=32)
    name: str = Field(max_length=128)
    from_state: str | None = Field(default=None, max_length=128)
    to_state: str | None = Field(default=None, max_length=128)
    actor: str | None = Field(default=None, max_length=128)
    role: str | None = Field(default=None, max_length=64)
    at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    changes: str = Field(sa_column=Column(Text, nullable=False))
    details: str = Field(sa_column=Column(Text, nullable=False))
    idempotency_key: str | None = Field(default=None, max_length=200)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    # The key the hash is an HMAC under (None: a plain SHA-256 written before keys existed).
    key_id: str | None = Field(default=None, max_length=32)
    # A digest of the command (trigger, input, actor) sent with an idempotency key.
    command_digest: str | None = Field(default=None, max_length=64)


class AssignmentRow(SQLModel, table=True):
    """Who holds a case: one row per person or unit in an assignment slot, and per stand-in
    for the time of a delegation; kept in the command's transaction."""

    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assignments_who", "who", "case_id"),)

    case_id: str = Field(foreign_key="cases.id", primary_key=True, max_length=36)
    slot: str = Field(primary_key=True, max_length=64)
    who: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=16)  # person, unit, stand_in
    until: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))


class TimerRow(SQLModel, table=True):
    """A durable timer: a deadline, a warning or a cycle, due at a time."""

    __tablename__ = "timers"
    # Only pending timers are in the due index: cancelling or firing one removes its entry
    # instead of moving it, and the index stays as small as the work still to do.
    __table_args__ = (Index("ix_timers_pending_due", "due_at", "id",
                            sqlite_where=text("status = 'pending'"),
                            postgresql_where=text("status = 'pending'")),
                      Index("ix_timers_case", "case_id"),
                      # At most one pending firing per cron cycle, whatever the processes do;
                      # it also serves the look-up of that firing.
                      Index("uq_timers_pending_cron", "workflow", "name", unique=True,
                            sqlite_where=text("case_id IS NULL AND status = 'pending'"),
                            postgresql_where=text("case_id IS NULL AND status = 'pending'")))

    id: int | None = Field(default=None, primary_key=True)
    case_id: str | None = Field(default=None, foreign_key="cases.id", max_length=36)
    workflow: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    name: str = Field(max_length=128)
    state: str | None = Field(default=None, max_length=128)
    due_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    status: str = Field(default="pending", max_length=16)
    claimed_by: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    payload: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    fired_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))


class ReportRow(SQLModel, table=True):
    """A report built by a cron cycle (e.g. the quarterly supervision report)."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("timer_id", name="uq_reports_timer"),)

    id: int | None = Field(default=None, primary_key=True)
    workflow: str = Field(max_length=64)
    name: str = Field(max_length=128)
    at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    timer_id: int | None = None
    payload: str = Field(sa_column=Column(Text, nullable=False))


class OutboxRow(SQLModel, table=True):
    """A notice for subscribers, written with its event and delivered after commit.

    A process delivering notices first claims them (owner and lease), so several
    schedulers deliver each notice once; a claim whose process died lapses with its lease.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=32)
    case_id: str | None = Field(default=None, max_length=36)
    seq: int | None = None
    report_id: int | None = None
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    claimed_by: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))


cases = CaseRow.__table__  # type: ignore[attr-defined]
events = EventRow.__table__  # type: ignore[attr-defined]
timers = TimerRow.__table__  # type: ignore[attr-defined]
workflow_versions = WorkflowVersionRow.__table__  # type: ignore[attr-defined]
reports = ReportRow.__table__  # type: ignore[attr-defined]
outbox = OutboxRow.__table__  # type: ignore[attr-defined]
assignments = AssignmentRow.__table__  # type: ignore[attr-defined]
metadata = SQLModel.metadata


class DocumentRow(SQLModel, table=True):
    """A document of a case file (一案一檔), kept once by its SHA-256; the events that
    carry it name it by that digest, so the hash chain covers it. Its content is here, or
    in a folder of the office's choosing (then ``content`` is empty)."""

    __tablename__ = "documents"

    sha256: str = Field(primary_key=True, max_length=64)
    media_type: str = Field(max_length=128)
    size: int
    content: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


documents = DocumentRow.__table__  # type: ignore[attr-defined]


class FigureCellRow(SQLModel, table=True):
    """One maintained report figure for one local day and one group: how many (``n``) and
    how much (``s``) of ``figure`` the cases of ``workflow`` whose breakdown field ``dim``
    has the value ``value`` gave that day (``dim`` and ``value`` empty: kept in total
    only). The engine keeps these in each command's transaction so a report sums a few
    rows. Keyed by day within a breakdown: a command's cells of one breakdown sit side by
    side, and a period is one range. On SQLite the key is the table (WITHOUT ROWID)."""

    __tablename__ = "report_figures"
    __table_args__ = {"sqlite_with_rowid": False}

    workflow: str = Field(primary_key=True, max_length=64)
    dim: str = Field(primary_key=True, max_length=64)
    day: str = Field(primary_key=True, max_length=10)  # YYYY-MM-DD in the workflow's zone
    figure: str = Field(primary_key=True, max_length=160)
    value: str = Field(primary_key=True, max_length=512)
    # On PostgreSQL a cell is kept in several rows (by case), so that commands on different
    # cases seldom wait for each other's row lock on the same cell; a report sums them.
    shard: int = Field(default=0, primary_key=True)
    n: float = 0.0  # a count
    s: float = 0.0  # a sum (of a figure's field, of seconds in a state, of days to resolve)


class StayRow(SQLModel, table=True):
    """One completed stay of a case in a state (ended by the case's event ``seq``), kept
    for the time-in-state percentiles of reports. Keyed by state and length, so the
    percentile of a period walks one state's stays in order (one B-tree on SQLite)."""

    __tablename__ = "report_stays"
    __table_args__ = {"sqlite_with_rowid": False}

    workflow: str = Field(primary_key=True, max_length=64)
    state: str = Field(primary_key=True, max_length=128)
    secs: float = Field(primary_key=True)
    day: str = Field(primary_key=True, max_length=10)
    case_id: str = Field(primary_key=True, max_length=36)
    seq: int = Field(primary_key=True)


class FigurePlanRow(SQLModel, table=True):
    """Which report definition the maintained figures of a workflow follow (a digest of
    its figures, breakdowns and zone); a report uses them only while it matches."""

    __tablename__ = "report_plans"

    workflow: str = Field(primary_key=True, max_length=64)
    fingerprint: str = Field(max_length=64)
    built_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


report_figures = FigureCellRow.__table__  # type: ignore[attr-defined]
report_stays = StayRow.__table__  # type: ignore[attr-defined]
report_plans = FigurePlanRow.__table__  # type: ignore[attr-defined]
