"""Every statement the store runs, built with SQLAlchemy Core and compiled once per database.

The compiled SQL runs on the pooled DBAPI connection (see :mod:`persistence.store`),
so the per-command path pays SQLAlchemy's compilation and result processing once,
not on every execution.
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, literal_column, or_, select, text, update
from sqlalchemy import case as sql_case
from sqlalchemy.sql import ClauseElement

from . import models
from .dialects import Dialect

C = models.cases
E = models.events
T = models.timers
W = models.workflow_versions
R = models.reports
O = models.outbox  # noqa: E741
F = models.report_figures
S = models.report_stays
P = models.report_plans

# Written into the SQL, not bound: the planner can then use the partial indexes that hold only
# pending timers (a bound ``status = ?`` cannot prove the index's condition).
PENDING = T.c.status == literal_column("'pending'")
CASE_COLS = (C.c.id, C.c.workflow, C.c.version, C.c.state, C.c.final, C.c.data, C.c.escalation_level,
             C.c.opened_at, C.c.updated_at, C.c.row_version, C.c.last_seq, C.c.last_hash, C.c.clocks,
             C.c.at_risk, C.c.overdue_since, C.c.party_key, C.c.closed_at, C.c.seal, C.c.unit,
             C.c.next_due_at, C.c.next_deadline)
EVENT_COLS = (E.c.case_id, E.c.seq, E.c.kind, E.c.name, E.c.from_state, E.c.to_state, E.c.actor,
              E.c.role, E.c.at, E.c.changes, E.c.details, E.c.idempotency_key, E.c.prev_hash,
              E.c.hash, E.c.key_id, E.c.command_digest)
TIMER_COLS = (T.c.id, T.c.case_id, T.c.workflow, T.c.kind, T.c.name, T.c.state, T.c.due_at,
              T.c.status, T.c.payload)
# Indexed columns (party_key; final, unit and next_due_at of the due indexes): SQLite rewrites
# an index entry whenever one of its columns is in the SET list, even to the same value, so
# the usual update leaves them out and a command that changes one of them uses the full one.
CASE_UPDATE = ("version", "state", "data", "escalation_level", "updated_at", "row_version",
               "last_seq", "last_hash", "clocks", "at_risk", "closed_at", "seal",
               "next_deadline")
CASE_INDEXED = ("final", "party_key", "unit", "next_due_at", "overdue_since")
FAR_DT = datetime(9999, 12, 31)  # the next deadline of an open case that has none


class Statement:
    """A Core statement compiled for one database, run on a DBAPI cursor."""

    __slots__ = ("_fixed", "_order", "_plain", "sql")

    def __init__(self, stmt: ClauseElement, dialect: Any) -> None:
        compiled: Any = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        order = compiled.positiontup
        self._order: tuple[str, ...] | None = tuple(order) if order is not None else None
        # Literal values in the statement (e.g. status == "pending") are bound parameters too.
        self._fixed = {name: b.value for name, b in compiled.binds.items() if not b.required}
        self._plain = not self._fixed

    def params(self, values: dict[str, Any]) -> Any:
        if self._order is None:
            return values if self._plain else {**self._fixed, **values}
        if self._plain:
            return tuple([values[k] for k in self._order])
        fixed = self._fixed
        return tuple([values[k] if k in values else fixed[k] for k in self._order])


def _values(table: Any, cols: Any) -> Any:
    return insert(table).values({c.name: bindparam(c.name) for c in cols})


class Statements:
    """The compiled statements of one store."""

    def __init__(self, sa_dialect: Any, dialect: Dialect) -> None:
        self._sa_dialect = sa_dialect
        self._dialect = dialect
        self._by_field: dict[str, Statement] = {}

        def c(stmt: Any) -> Statement:
            return Statement(stmt, sa_dialect)

        by_id = C.c.id == bindparam("id")
        # cases and events
        self.lock_case = c(dialect.lock_case(select(*CASE_COLS).where(by_id)))
        self.get_case = c(select(*CASE_COLS).where(by_id))
        self.event_by_key = c(select(*EVENT_COLS).where(E.c.idempotency_key == bindparam("key")))
        self.history = c(select(*EVENT_COLS).where(E.c.case_id == bindparam("id")).order_by(E.c.seq))
        self.event_at = c(select(*EVENT_COLS).where(E.c.case_id == bindparam("id"),
                                                    E.c.seq == bindparam("seq")))
        self.head = c(select(C.c.last_seq, C.c.last_hash).where(by_id))
        self.row_version = c(select(C.c.row_version).where(by_id))
        self.insert_case = c(_values(C, CASE_COLS))
        self.insert_event = c(_values(E, EVENT_COLS))
        self.update_case = c(
            update(C)
            .where(C.c.id == bindparam("b_id"), C.c.row_version == bindparam("b_expected"))
            .values({k: bindparam(k) for k in CASE_UPDATE})
        )
        self.update_case_full = c(
            update(C)
            .where(C.c.id == bindparam("b_id"), C.c.row_version == bindparam("b_expected"))
            .values({k: bindparam(k) for k in (*CASE_UPDATE, *CASE_INDEXED)})
        )
        self.events_with_documents = c(
            select(E.c.case_id, E.c.seq, E.c.details)
            .where(E.c.details.like('%"documents":%')).order_by(E.c.case_id, E.c.seq))
        self.case_events_with_documents = c(
            select(E.c.case_id, E.c.seq, E.c.details)
            .where(E.c.case_id == bindparam("id"), E.c.details.like('%"documents":%'))
            .order_by(E.c.seq))
        D = models.documents
        self.insert_document = c(dialect.insert_ignore(D).values(
            {k.name: bindparam(k.name) for k in D.c}))
        self.get_document = c(select(D.c.sha256, D.c.media_type, D.c.size, D.c.content)
                              .where(D.c.sha256 == bindparam("sha")))
        A = models.assignments
        self.assignments_of = c(select(A.c.slot, A.c.who, A.c.kind, A.c.until)
                                .where(A.c.case_id == bindparam("id"))
                                .order_by(A.c.slot, A.c.who))
        self.delete_assignments = c(delete(A).where(A.c.case_id == bindparam("b_case")))
        self.insert_assignment = c(_values(A, tuple(A.c)))
        self.case_ids = c(select(C.c.id).order_by(C.c.opened_at, C.c.id))
        self.case_ids_wf = c(select(C.c.id).where(C.c.workflow == bindparam("workflow"))
                             .order_by(C.c.opened_at, C.c.id))
        self.count_cases = c(select(func.count()).select_from(C))
        self.open_cases_where = {
            "open": c(select(C.c.id).where(C.c.workflow == bindparam("workflow"), C.c.final.is_(False))
                      .order_by(C.c.opened_at, C.c.id)),
            "overdue": c(select(C.c.id).where(C.c.workflow == bindparam("workflow"),
                                              C.c.final.is_(False), C.c.overdue_since.is_not(None))
                         .order_by(C.c.opened_at, C.c.id)),
            "at_risk": c(select(C.c.id).where(C.c.workflow == bindparam("workflow"),
                                              C.c.final.is_(False), C.c.at_risk.is_(True))
                         .order_by(C.c.opened_at, C.c.id)),
        }
        self.party_counts = c(
            select(func.count(), func.coalesce(func.sum(sql_case((C.c.final.is_(False), 1), else_=0)), 0))
            .where(C.c.workflow == bindparam("workflow"), C.c.party_key == bindparam("party"),
                   C.c.id != bindparam("id"))
        )
        # workflow versions
        self.wf_def = c(select(W.c.definition).where(W.c.name == bindparam("name"),
                                                     W.c.version == bindparam("version")))
        self.wf_insert = c(dialect.insert_ignore(W).values({k.name: bindparam(k.name) for k in W.c}))
        # timers
        self.insert_timer = c(_values(T, (T.c.case_id, T.c.workflow, T.c.kind, T.c.name, T.c.state,
                                          T.c.due_at, T.c.status, T.c.payload, T.c.created_at)))
        self.cancel_timers = c(update(T).where(T.c.case_id == bindparam("b_case"),
                                               T.c.name == bindparam("b_name"),
                                               PENDING)
                               .values(status="cancelled"))
        self.cancel_all_timers = c(update(T).where(T.c.case_id == bindparam("b_case"),
                                                   PENDING)
                                   .values(status="cancelled"))
        self.open_on_version = c(select(C.c.id, C.c.version, C.c.state)
                                 .where(C.c.workflow == bindparam("workflow"), C.c.final.is_(False),
                                        C.c.version != bindparam("version"))
                                 .order_by(C.c.opened_at, C.c.id))
        self.wf_versions = c(select(W.c.version, W.c.created_at).where(W.c.name == bindparam("name"))
                             .order_by(W.c.created_at))
        self.claim_select = c(dialect.claim(
            select(T.c.id, T.c.due_at).where(PENDING, T.c.due_at <= bindparam("now"),
                                 or_(T.c.lease_until.is_(None), T.c.lease_until < bindparam("now")))
            .order_by(T.c.due_at, T.c.id).limit(bindparam("limit"))
        ))
        self.claim_update = c(update(T).where(T.c.id == bindparam("b_id"))
                              .values(claimed_by=bindparam("owner"), lease_until=bindparam("lease")))
        self.release_claim = c(update(T).where(T.c.id == bindparam("b_id"),
                                               T.c.claimed_by == bindparam("b_owner"),
                                               PENDING)
                               .values(claimed_by=None, lease_until=None))
        self.lock_timer = c(dialect.lock_case(select(*TIMER_COLS, T.c.claimed_by)
                                              .where(T.c.id == bindparam("id"))))
        self.timer_case = c(select(T.c.case_id).where(T.c.id == bindparam("id")))
        self.finish_timer = c(update(T).where(T.c.id == bindparam("b_id"))
                              .values(status=bindparam("status"), fired_at=bindparam("at")))
        self.failed_timers = c(select(*TIMER_COLS).where(T.c.status == literal_column("'failed'"))
                               .order_by(T.c.due_at, T.c.id).limit(bindparam("limit")))
        self.retry_timer = c(update(T).where(T.c.id == bindparam("b_id"),
                                             T.c.status == literal_column("'failed'"))
                             .values(status="pending", claimed_by=None, lease_until=None,
                                     fired_at=None))
        self.pending_timers = c(select(*TIMER_COLS).where(T.c.case_id == bindparam("id"),
                                                          PENDING)
                                .order_by(T.c.due_at, T.c.id))
        self.pending_cron = c(select(T.c.id).where(T.c.case_id.is_(None),
                                                   T.c.workflow == bindparam("workflow"),
                                                   T.c.name == bindparam("name"),
                                                   PENDING))
        self.count_pending_due = c(select(func.count()).select_from(T)
                                   .where(PENDING, T.c.due_at <= bindparam("now")))
        # reports and the outbox
        self.insert_report = c(_values(R, (R.c.workflow, R.c.name, R.c.at, R.c.timer_id, R.c.payload))
                               .returning(R.c.id))
        self.get_report = c(select(R.c.id, R.c.workflow, R.c.name, R.c.at, R.c.payload)
                            .where(R.c.id == bindparam("id")))
        self.insert_outbox = c(_values(O, (O.c.name, O.c.case_id, O.c.seq, O.c.report_id,
                                           O.c.created_at)))
        unclaimed = (O.c.delivered_at.is_(None),
                     or_(O.c.lease_until.is_(None), O.c.lease_until < bindparam("now")))
        outbox_cols = (O.c.id, O.c.name, O.c.case_id, O.c.seq, O.c.report_id)
        self.pending_outbox = c(select(*outbox_cols).where(*unclaimed).order_by(O.c.id)
                                .limit(bindparam("limit")))
        self.claim_outbox = c(dialect.claim(select(*outbox_cols).where(*unclaimed)
                                            .order_by(O.c.id).limit(bindparam("limit"))))
        self.claim_outbox_row = c(update(O).where(O.c.id == bindparam("b_id"))
                                  .values(claimed_by=bindparam("owner"),
                                          lease_until=bindparam("lease")))
        self.release_outbox_row = c(update(O).where(O.c.id == bindparam("b_id"),
                                                    O.c.claimed_by == bindparam("b_owner"),
                                                    O.c.delivered_at.is_(None))
                                    .values(claimed_by=None, lease_until=None))
        self.deliver_outbox = c(update(O).where(O.c.id == bindparam("b_id"))
                                .values(delivered_at=bindparam("at")))

        # maintained report figures
        self.add_figures = c(dialect.insert_add(
            F, ("workflow", "dim", "day", "figure", "value", "shard"), ("n", "s")))
        self.insert_stay = c(_values(S, tuple(S.c)))
        self.last_move = c(
            select(E.c.at, E.c.to_state)
            .where(E.c.case_id == bindparam("id"), E.c.seq < bindparam("seq"),
                   or_(E.c.kind == literal_column("'open'"),
                       (E.c.kind.in_([literal_column("'transition'"), literal_column("'migration'")]))
                       & or_(E.c.from_state.is_(None), E.c.from_state != E.c.to_state)))
            .order_by(E.c.seq.desc()).limit(1))
        self.figure_plan = c(select(P.c.fingerprint).where(P.c.workflow == bindparam("workflow")))
        self.insert_plan = c(_values(P, tuple(P.c)))
        self.start_plan = c(dialect.insert_ignore(P).values({k.name: bindparam(k.name) for k in P.c}))
        self.drop_plan = c(delete(P).where(P.c.workflow == bindparam("b_workflow")))
        self.drop_figures = c(delete(F).where(F.c.workflow == bindparam("b_workflow")))
        self.drop_all_stays = c(delete(S).where(S.c.workflow == bindparam("b_workflow")))
        self.count_cases_wf = c(select(func.count()).select_from(C)
                                .where(C.c.workflow == bindparam("workflow")))
        self.cases_after = c(select(*CASE_COLS)
                             .where(C.c.workflow == bindparam("workflow"), C.c.id > bindparam("after"))
                             .order_by(C.c.id).limit(bindparam("limit")))
        self.events_between = c(select(*EVENT_COLS).select_from(E.join(C, C.c.id == E.c.case_id))
                                .where(C.c.workflow == bindparam("workflow"),
                                       E.c.case_id > bindparam("lo"), E.c.case_id <= bindparam("hi"))
                                .order_by(E.c.case_id, E.c.seq))
        self.all_figures = c(select(F.c.dim, F.c.figure, F.c.value, F.c.day, func.sum(F.c.n),
                                    func.sum(F.c.s))
                             .where(F.c.workflow == bindparam("workflow"))
                             .group_by(F.c.dim, F.c.figure, F.c.value, F.c.day))
        self.all_stays = c(select(S.c.case_id, S.c.seq, S.c.state, S.c.day, S.c.secs)
                           .where(S.c.workflow == bindparam("workflow")))

    def open_by_state(self) -> Statement:
        """Open and overdue cases of a workflow counted per state."""
        st = self._by_field.get("\x00state")
        if st is None:
            st = Statement(
                select(C.c.state, func.count(), func.count(C.c.overdue_since))
                .where(C.c.workflow == bindparam("workflow"), C.c.final.is_(False))
                .group_by(C.c.state).order_by(C.c.state),
                self._sa_dialect)
            self._by_field["\x00state"] = st
        return st

    def open_by_field(self, key: str) -> Statement:
        """Open and overdue cases of a workflow counted per value of one data field."""
        st = self._by_field.get(key)
        if st is None:
            value = self._dialect.json_field(C.c.data, key).label("value")
            st = Statement(
                select(value, func.count(), func.count(C.c.overdue_since))
                .where(C.c.workflow == bindparam("workflow"), C.c.final.is_(False))
                .group_by(value).order_by(value),
                self._sa_dialect)
            self._by_field[key] = st
        return st

    @cached_property
    def ledger(self) -> LedgerStatements:
        """The statements of chain verification and the ledger (compiled on first use)."""
        return LedgerStatements(self._sa_dialect, self._dialect)


class LedgerStatements:
    """Verification of the chains, and the export and import of whole cases (:mod:`persistence.ledger`).

    Cases, events and timers are read and written with all their stored columns (the
    tables' own column lists, so a column added by a migration travels too), JSON as text.
    """

    def __init__(self, sa_dialect: Any, dialect: Dialect) -> None:
        self._sa_dialect = sa_dialect
        self._dialect = dialect
        self._cases: dict[tuple[bool, bool], Statement] = {}

        def c(stmt: Any) -> Statement:
            return Statement(stmt, sa_dialect)

        self.case_cols = tuple(C.c)
        self.event_cols = tuple(E.c)
        self.timer_cols = (T.c.workflow, T.c.kind, T.c.name, T.c.state, T.c.due_at, T.c.status,
                           T.c.payload, T.c.created_at)
        self.wf_cols = tuple(W.c)
        # One statement, so the head and the events are read at the same moment.
        self.chain = c(select(*CASE_COLS, *EVENT_COLS)
                       .select_from(C.outerjoin(E, E.c.case_id == C.c.id))
                       .where(C.c.id == bindparam("id")).order_by(E.c.seq))
        # Every case's chain in one pass (verify all), ordered so cases come one after another.
        self.chain_all = c(select(*CASE_COLS, *EVENT_COLS)
                           .select_from(C.outerjoin(E, E.c.case_id == C.c.id))
                           .order_by(C.c.id, E.c.seq))
        self.count_events = c(select(func.count()).select_from(E))
        self.case_row = c(select(*self.case_cols).where(C.c.id == bindparam("id")))
        self.event_rows = c(select(*self.event_cols).where(E.c.case_id == bindparam("id"))
                            .order_by(E.c.seq))
        self.timer_rows = c(select(*self.timer_cols).where(T.c.case_id == bindparam("id"),
                                                           PENDING)
                            .order_by(T.c.due_at, T.c.id))
        self.wf_row = c(select(*self.wf_cols).where(W.c.name == bindparam("name"),
                                                    W.c.version == bindparam("version")))
        self.case_exists = c(select(C.c.id).where(C.c.id == bindparam("id")))
        self.key_owner = c(select(E.c.case_id, E.c.seq)
                           .where(E.c.idempotency_key == bindparam("key")))
        self.insert_case = c(_values(C, self.case_cols))
        self.insert_event = c(_values(E, self.event_cols))
        self.insert_timer = c(_values(T, (T.c.case_id, *self.timer_cols)))
        if dialect.name == "postgresql":
            self.snapshot: Statement | None = c(text(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        else:  # SQLite: a deferred BEGIN already reads one snapshot
            self.snapshot = None

    def select_cases(self, by_workflow: bool, by_unit: bool) -> Statement:
        """The rows of the cases of a workflow and/or of a unit (the data field ``unit``)."""
        st = self._cases.get((by_workflow, by_unit))
        if st is None:
            conds = []
            if by_workflow:
                conds.append(C.c.workflow == bindparam("workflow"))
            if by_unit:
                conds.append(self._dialect.json_field(C.c.data, "unit") == bindparam("unit"))
            st = Statement(select(*self.case_cols).where(*conds).order_by(C.c.opened_at, C.c.id),
                           self._sa_dialect)
            self._cases[(by_workflow, by_unit)] = st
        return st
