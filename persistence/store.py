"""The store: transactions, locking, idempotency lookups and the event chain.

A command runs in one write transaction (:meth:`Store.write`): the case row
is locked first (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE`` on
PostgreSQL), the new event is chained to the case's last hash, and the case
and event are written together with a row-version check.

SQLAlchemy builds the schema, the connection pool and every statement (Core
constructs on the SQLModel tables, compiled once per database); the command
path then runs those compiled statements on the pooled DBAPI connection,
which spares SQLAlchemy's per-execution overhead on the hottest path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, create_engine, func, insert, select, update
from sqlalchemy.sql import ClauseElement

from . import models
from .chain import GENESIS, event_hash, verify_chain
from .dialects import dialect_for
from .errors import DatabaseUnavailable, DuplicateKey, StaleVersion
from .records import CaseRecord, EventRecord

_C = models.cases
_E = models.events
_W = models.workflow_versions

_CASE_COLS = tuple(_C.c)
_EVENT_COLS = (_E.c.case_id, _E.c.seq, _E.c.kind, _E.c.name, _E.c.from_state, _E.c.to_state,
               _E.c.actor, _E.c.role, _E.c.at, _E.c.changes, _E.c.details, _E.c.idempotency_key,
               _E.c.prev_hash, _E.c.hash)


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class _Statement:
    """A Core statement compiled once for one database, run on a DBAPI cursor."""

    __slots__ = ("_order", "sql")

    def __init__(self, stmt: ClauseElement, dialect: Any) -> None:
        compiled: Any = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        order = compiled.positiontup
        self._order: tuple[str, ...] | None = tuple(order) if order is not None else None

    def params(self, values: dict[str, Any]) -> Any:
        if self._order is None:
            return values
        return tuple(values[k] for k in self._order)


class Store:
    """One database (a SQLite file or PostgreSQL) holding cases, events and timers."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL",
                 busy_timeout_ms: int = 10_000, pool_size: int = 5, echo: bool = False) -> None:
        self.url = url
        self.dialect = dialect_for(url, sqlite_synchronous=sqlite_synchronous,
                                   busy_timeout_ms=busy_timeout_ms)
        self.engine = create_engine(url, echo=echo, hide_parameters=True, pool_reset_on_return=None,
                                    **self.dialect.engine_kwargs(url, pool_size=pool_size))
        self.dialect.configure(self.engine)
        dbapi = self.engine.dialect.dbapi
        assert dbapi is not None
        self._integrity_error: type[Exception] = dbapi.IntegrityError
        self._operational_error: type[Exception] = dbapi.OperationalError
        self._interface_error: type[Exception] = dbapi.InterfaceError
        d = self.engine.dialect

        def c(stmt: Any) -> _Statement:
            return _Statement(stmt, d)

        by_id = _C.c.id == bindparam("id")
        self.s_lock_case = c(self.dialect.lock_case(select(*_CASE_COLS).where(by_id)))
        self.s_get_case = c(select(*_CASE_COLS).where(by_id))
        self.s_by_key = c(select(*_EVENT_COLS).where(_E.c.idempotency_key == bindparam("key")))
        self.s_history = c(select(*_EVENT_COLS).where(_E.c.case_id == bindparam("id"))
                           .order_by(_E.c.seq))
        self.s_head = c(select(_C.c.last_seq, _C.c.last_hash).where(by_id))
        self.s_row_version = c(select(_C.c.row_version).where(by_id))
        self.s_insert_case = c(insert(_C).values({k.name: bindparam(k.name) for k in _CASE_COLS}))
        self.s_insert_event = c(insert(_E).values({k.name: bindparam(k.name) for k in _EVENT_COLS}))
        self.s_update_case = c(
            update(_C)
            .where(_C.c.id == bindparam("b_id"), _C.c.row_version == bindparam("b_expected"))
            .values({k: bindparam(k) for k in ("state", "final", "data", "escalation_level",
                                                "updated_at", "row_version", "last_seq",
                                                "last_hash")})
        )
        self.s_case_ids = c(select(_C.c.id).order_by(_C.c.opened_at, _C.c.id))
        self.s_case_ids_wf = c(select(_C.c.id).where(_C.c.workflow == bindparam("workflow"))
                               .order_by(_C.c.opened_at, _C.c.id))
        self.s_count_cases = c(select(func.count()).select_from(_C))
        self.s_wf_def = c(select(_W.c.definition).where(_W.c.name == bindparam("name"),
                                                         _W.c.version == bindparam("version")))
        self.s_wf_insert = c(insert(_W).values({k.name: bindparam(k.name) for k in _W.c}))

    @property
    def backend(self) -> str:
        return self.dialect.name

    def create_schema(self) -> None:
        """Create the tables that do not exist yet."""
        models.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        try:
            conn = self.engine.raw_connection()
        except Exception as e:
            raise DatabaseUnavailable(f"cannot connect: {e}") from None
        try:
            cur = conn.cursor()
            try:
                self.dialect.begin(cur, write=write)
                yield cur
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except Exception:  # the connection is gone; the pool will replace it
                    conn.invalidate()
                raise
            finally:
                cur.close()
        except self._integrity_error as e:
            if "idempotency_key" in str(e):
                raise DuplicateKey(str(e)) from None
            raise
        except (self._operational_error, self._interface_error) as e:
            raise DatabaseUnavailable(f"database unavailable: {e}") from None
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """One write transaction; commits on success, rolls back on any error."""
        with self._transaction(write=True) as cur:
            yield WriteTx(self, cur)

    @contextmanager
    def read(self) -> Iterator[ReadTx]:
        """A read-only transaction (no write lock on SQLite)."""
        with self._transaction(write=False) as cur:
            yield ReadTx(self, cur)


class ReadTx:
    """Queries inside one transaction."""

    def __init__(self, store: Store, cur: Any) -> None:
        self.store = store
        self.cur = cur
        self._dt_in = store.dialect.datetime_in
        self._dt_out = store.dialect.datetime_out

    def _run(self, st: _Statement, values: dict[str, Any]) -> Any:
        self.cur.execute(st.sql, st.params(values))
        return self.cur

    def _case(self, row: Sequence[Any]) -> CaseRecord:
        dt = self._dt_out
        return CaseRecord(row[0], row[1], row[2], row[3], bool(row[4]), json.loads(row[5]), row[6],
                          dt(row[7]), dt(row[8]), row[9], row[10], row[11])

    def _event(self, row: Sequence[Any]) -> EventRecord:
        return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                           self._dt_out(row[8]), json.loads(row[9]), json.loads(row[10]), row[11],
                           row[12], row[13])

    def get_case(self, case_id: str) -> CaseRecord | None:
        row = self._run(self.store.s_get_case, {"id": case_id}).fetchone()
        return self._case(row) if row is not None else None

    def history(self, case_id: str) -> list[EventRecord]:
        return [self._event(r) for r in self._run(self.store.s_history, {"id": case_id}).fetchall()]

    def event_by_key(self, key: str) -> EventRecord | None:
        row = self._run(self.store.s_by_key, {"key": key}).fetchone()
        return self._event(row) if row is not None else None

    def verify_case(self, case_id: str) -> list[str]:
        """Problems in the event chain of one case (empty when intact)."""
        rows = [_RawEvent(r, self._dt_out(r[8]))
                for r in self._run(self.store.s_history, {"id": case_id}).fetchall()]
        problems = verify_chain(case_id, rows)
        head = self._run(self.store.s_head, {"id": case_id}).fetchone()
        if head is None:
            return problems
        last_seq, last_hash = head
        if rows and (last_seq != rows[-1].seq or last_hash != rows[-1].hash):
            problems.append(f"case {case_id}: the case's head (seq {last_seq}) does not match its "
                            f"last event (seq {rows[-1].seq}): events were deleted or added")
        if not rows and last_seq:
            problems.append(f"case {case_id}: all {last_seq} events are missing")
        return problems

    def case_ids(self, workflow: str | None = None) -> list[str]:
        if workflow is None:
            return [r[0] for r in self._run(self.store.s_case_ids, {}).fetchall()]
        return [r[0] for r in self._run(self.store.s_case_ids_wf, {"workflow": workflow}).fetchall()]

    def count_cases(self) -> int:
        return int(self._run(self.store.s_count_cases, {}).fetchone()[0])

    def workflow_definition(self, name: str, version: str) -> str | None:
        row = self._run(self.store.s_wf_def, {"name": name, "version": version}).fetchone()
        return row[0] if row is not None else None


class _RawEvent:
    """An event row with its JSON columns kept as stored text, for hash checks."""

    __slots__ = (
        "actor",
        "at",
        "case_id",
        "changes",
        "details",
        "from_state",
        "hash",
        "idempotency_key",
        "kind",
        "name",
        "prev_hash",
        "role",
        "seq",
        "to_state",
    )

    def __init__(self, r: Sequence[Any], at: datetime) -> None:
        (self.case_id, self.seq, self.kind, self.name, self.from_state, self.to_state, self.actor,
         self.role, _, self.changes, self.details, self.idempotency_key, self.prev_hash,
         self.hash) = r
        self.at = at


class WriteTx(ReadTx):
    """The writes of one command, inside its transaction."""

    def __init__(self, store: Store, cur: Any) -> None:
        super().__init__(store, cur)
        self._pending: tuple[EventRecord, str, str] | None = None

    def lock_case(self, case_id: str) -> CaseRecord | None:
        """Read the case and hold it against other writers until commit."""
        row = self._run(self.store.s_lock_case, {"id": case_id}).fetchone()
        return self._case(row) if row is not None else None

    def save_workflow_version(self, name: str, version: str, definition: str, source: str,
                              at: datetime) -> bool:
        """Store a definition version once; True if it was new."""
        if self.workflow_definition(name, version) is not None:
            return False
        self._run(self.store.s_wf_insert, {"name": name, "version": version,
                                           "definition": definition, "source": source,
                                           "created_at": self._dt_in(at)})
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
        dt = self._dt_in
        self._run(self.store.s_insert_case, {
            "id": case.id, "workflow": case.workflow, "version": case.version, "state": case.state,
            "final": case.final, "data": _dumps(case.data), "escalation_level": case.escalation_level,
            "opened_at": dt(case.opened_at), "updated_at": dt(case.updated_at),
            "row_version": case.row_version, "last_seq": case.last_seq, "last_hash": case.last_hash,
        })

    def update_case(self, case: CaseRecord, expected_row_version: int) -> None:
        """Write the case if it is still at ``expected_row_version``; else :class:`StaleVersion`."""
        cur = self._run(self.store.s_update_case, {
            "b_id": case.id, "b_expected": expected_row_version, "state": case.state,
            "final": case.final, "data": _dumps(case.data), "escalation_level": case.escalation_level,
            "updated_at": self._dt_in(case.updated_at), "row_version": case.row_version,
            "last_seq": case.last_seq, "last_hash": case.last_hash,
        })
        if cur.rowcount != 1:
            row = self._run(self.store.s_row_version, {"id": case.id}).fetchone()
            raise StaleVersion(case.id, expected_row_version, row[0] if row else None)

    def insert_event(self, ev: EventRecord) -> None:
        """Insert the event last built by :meth:`chain_event`."""
        assert self._pending is not None and self._pending[0] is ev, \
            "insert_event must follow chain_event for the same event"
        _, cj, dj = self._pending
        self._run(self.store.s_insert_event, {
            "case_id": ev.case_id, "seq": ev.seq, "kind": ev.kind, "name": ev.name,
            "from_state": ev.from_state, "to_state": ev.to_state, "actor": ev.actor, "role": ev.role,
            "at": self._dt_in(ev.at), "changes": cj, "details": dj,
            "idempotency_key": ev.idempotency_key, "prev_hash": ev.prev_hash, "hash": ev.hash,
        })
