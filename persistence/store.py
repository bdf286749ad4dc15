"""The store: transactions, locking, idempotency lookups and the event chain.

A command runs in one write transaction (:meth:`Store.write`): the case row
is locked first (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE`` on
PostgreSQL), the new event is chained to the case's last hash, and the case
and event are written together with a row-version check. Statements are
SQLAlchemy Core, built once, on the SQLModel tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, create_engine, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from . import models
from .chain import GENESIS, event_hash, verify_chain
from .dialects import dialect_for
from .errors import DatabaseUnavailable, DuplicateKey, StaleVersion
from .records import CaseRecord, EventRecord

_C = models.cases
_E = models.events
_W = models.workflow_versions


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _case(row: Row[Any]) -> CaseRecord:
    return CaseRecord(row.id, row.workflow, row.version, row.state, row.final, json.loads(row.data),
                      row.escalation_level, row.opened_at, row.updated_at, row.row_version,
                      row.last_seq, row.last_hash)


def _event(row: Row[Any]) -> EventRecord:
    return EventRecord(row.case_id, row.seq, row.kind, row.name, row.from_state, row.to_state,
                       row.actor, row.role, row.at, json.loads(row.changes), json.loads(row.details),
                       row.idempotency_key, row.prev_hash, row.hash)


_EVENT_COLS = (_E.c.case_id, _E.c.seq, _E.c.kind, _E.c.name, _E.c.from_state, _E.c.to_state,
               _E.c.actor, _E.c.role, _E.c.at, _E.c.changes, _E.c.details, _E.c.idempotency_key,
               _E.c.prev_hash, _E.c.hash)


class Store:
    """One database (a SQLite file or PostgreSQL) holding cases, events and timers."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL",
                 busy_timeout_ms: int = 10_000, pool_size: int = 5, echo: bool = False) -> None:
        self.url = url
        self.dialect = dialect_for(url, sqlite_synchronous=sqlite_synchronous,
                                   busy_timeout_ms=busy_timeout_ms)
        self.engine = create_engine(url, echo=echo, hide_parameters=True,
                                    **self.dialect.engine_kwargs(url, pool_size=pool_size))
        self.dialect.configure(self.engine)
        self._lock_case = self.dialect.lock_case(select(_C).where(_C.c.id == bindparam("id")))
        self._get_case = select(_C).where(_C.c.id == bindparam("id"))
        self._by_key = select(*_EVENT_COLS).where(_E.c.idempotency_key == bindparam("key"))
        self._insert_event = insert(_E)
        self._insert_case = insert(_C)
        self._update_case = (
            update(_C)
            .where(_C.c.id == bindparam("b_id"), _C.c.row_version == bindparam("b_expected"))
        )
        self._history = select(*_EVENT_COLS).where(_E.c.case_id == bindparam("id")).order_by(_E.c.seq)

    @property
    def backend(self) -> str:
        return self.dialect.name

    def create_schema(self) -> None:
        """Create the tables that do not exist yet."""
        models.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """One write transaction; commits on success, rolls back on any error."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield WriteTx(self, conn)
        except IntegrityError as e:
            if "idempotency_key" in str(e.orig) or "uq_events_idempotency_key" in str(e.orig):
                raise DuplicateKey(str(e.orig)) from None
            raise
        except OperationalError as e:
            raise DatabaseUnavailable(f"database unavailable: {e.orig}") from None
        except DBAPIError as e:
            if e.connection_invalidated:
                raise DatabaseUnavailable(f"connection lost: {e.orig}") from None
            raise

    @contextmanager
    def read(self) -> Iterator[ReadTx]:
        """A read-only transaction (no write lock on SQLite)."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(casework_read=True)
                with conn.begin():
                    yield ReadTx(self, conn)
        except OperationalError as e:
            raise DatabaseUnavailable(f"database unavailable: {e.orig}") from None


class ReadTx:
    """Queries inside one transaction."""

    def __init__(self, store: Store, conn: Connection) -> None:
        self.store = store
        self.conn = conn

    def get_case(self, case_id: str) -> CaseRecord | None:
        row = self.conn.execute(self.store._get_case, {"id": case_id}).first()
        return _case(row) if row is not None else None

    def history(self, case_id: str) -> list[EventRecord]:
        return [_event(r) for r in self.conn.execute(self.store._history, {"id": case_id})]

    def event_by_key(self, key: str) -> EventRecord | None:
        row = self.conn.execute(self.store._by_key, {"key": key}).first()
        return _event(row) if row is not None else None

    def verify_case(self, case_id: str) -> list[str]:
        """Problems in the event chain of one case (empty when intact)."""
        rows = list(self.conn.execute(self.store._history, {"id": case_id}))
        problems = verify_chain(case_id, rows)
        head = self.conn.execute(select(_C.c.last_seq, _C.c.last_hash).where(_C.c.id == case_id)).first()
        if head is not None and rows and (head.last_seq != rows[-1].seq or head.last_hash != rows[-1].hash):
            problems.append(f"case {case_id}: the case's head (seq {head.last_seq}) does not match "
                            f"its last event (seq {rows[-1].seq}): events were deleted or added")
        if head is not None and not rows and head.last_seq:
            problems.append(f"case {case_id}: all {head.last_seq} events are missing")
        return problems

    def case_ids(self, workflow: str | None = None) -> list[str]:
        stmt = select(_C.c.id).order_by(_C.c.opened_at, _C.c.id)
        if workflow is not None:
            stmt = stmt.where(_C.c.workflow == workflow)
        return [r.id for r in self.conn.execute(stmt)]

    def count_cases(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(_C)).scalar_one())

    def workflow_versions(self) -> list[tuple[str, str, str, str]]:
        rows = self.conn.execute(select(_W.c.name, _W.c.version, _W.c.definition, _W.c.source))
        return [(r.name, r.version, r.definition, r.source) for r in rows]

    def workflow_definition(self, name: str, version: str) -> str | None:
        row = self.conn.execute(
            select(_W.c.definition).where(_W.c.name == name, _W.c.version == version)
        ).first()
        return row.definition if row is not None else None


class WriteTx(ReadTx):
    """The writes of one command, inside its transaction."""

    def __init__(self, store: Store, conn: Connection) -> None:
        super().__init__(store, conn)
        self._pending: tuple[EventRecord, str, str] | None = None

    def lock_case(self, case_id: str) -> CaseRecord | None:
        """Read the case and hold it against other writers until commit."""
        row = self.conn.execute(self.store._lock_case, {"id": case_id}).first()
        return _case(row) if row is not None else None

    def save_workflow_version(self, name: str, version: str, definition: str, source: str,
                              at: datetime) -> bool:
        """Store a definition version once; True if it was new."""
        if self.workflow_definition(name, version) is not None:
            return False
        self.conn.execute(insert(_W), {"name": name, "version": version, "definition": definition,
                                       "source": source, "created_at": at})
        return True

    def chain_event(self, case: CaseRecord, *, kind: str, name: str, from_state: str | None,
                    to_state: str | None, actor: str | None, role: str | None, at: datetime,
                    changes: dict[str, Any], details: dict[str, Any],
                    idempotency_key: str | None) -> EventRecord:
        """Build the next event of ``case`` and move the case's chain head to it (in memory)."""
        seq = case.last_seq + 1
        prev = case.last_hash or GENESIS
        cj, dj = _dumps(changes), _dumps(details)
        h = event_hash(prev, case.id, seq, kind, name, from_state, to_state, actor, role, at, cj, dj,
                       idempotency_key)
        case.last_seq = seq
        case.last_hash = h
        ev = EventRecord(case.id, seq, kind, name, from_state, to_state, actor, role, at, changes,
                         details, idempotency_key, prev, h)
        self._pending = (ev, cj, dj)
        return ev

    def insert_case(self, case: CaseRecord) -> None:
        self.conn.execute(self.store._insert_case, {
            "id": case.id, "workflow": case.workflow, "version": case.version, "state": case.state,
            "final": case.final, "data": _dumps(case.data), "escalation_level": case.escalation_level,
            "opened_at": case.opened_at, "updated_at": case.updated_at,
            "row_version": case.row_version, "last_seq": case.last_seq, "last_hash": case.last_hash,
        })

    def update_case(self, case: CaseRecord, expected_row_version: int) -> None:
        """Write the case if it is still at ``expected_row_version``; else :class:`StaleVersion`."""
        res = self.conn.execute(self.store._update_case, {
            "b_id": case.id, "b_expected": expected_row_version, "state": case.state,
            "final": case.final, "data": _dumps(case.data), "escalation_level": case.escalation_level,
            "updated_at": case.updated_at, "row_version": case.row_version,
            "last_seq": case.last_seq, "last_hash": case.last_hash,
        })
        if res.rowcount != 1:
            actual = self.conn.execute(select(_C.c.row_version).where(_C.c.id == case.id)).scalar()
            raise StaleVersion(case.id, expected_row_version, actual)

    def insert_event(self, ev: EventRecord) -> None:
        """Insert the event last built by :meth:`chain_event`."""
        assert self._pending is not None and self._pending[0] is ev, \
            "insert_event must follow chain_event for the same event"
        _, cj, dj = self._pending
        self.conn.execute(self.store._insert_event, {
            "case_id": ev.case_id, "seq": ev.seq, "kind": ev.kind, "name": ev.name,
            "from_state": ev.from_state, "to_state": ev.to_state, "actor": ev.actor, "role": ev.role,
            "at": ev.at, "changes": cj, "details": dj, "idempotency_key": ev.idempotency_key,
            "prev_hash": ev.prev_hash, "hash": ev.hash,
        })
