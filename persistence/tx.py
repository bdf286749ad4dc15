"""What a transaction can read and write: cases, events, timers, reports, the outbox."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

import orjson

from .chain import GENESIS, Keyring, event_hash, fold_problems, seal, seal_holds, verify_chain
from .dialects import Dialect
from .errors import RowAltered, StaleVersion
from .records import CaseRecord, EventRecord, NewTimer, TimerRecord
from .sql import FAR_DT, Statement, Statements

OutboxItem = tuple[int, str, str | None, int | None, int | None]  # id, name, case, seq, report


def dumps(v: Any) -> str:
    """Canonical JSON for stored columns: sorted keys, no spaces, UTF-8 (orjson)."""
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


loads = orjson.loads


class ReadTx:
    """Queries inside one transaction."""

    def __init__(self, sql: Statements, dialect: Dialect, cur: Any,
                 keyring: Keyring | None = None) -> None:
        self.sql = sql
        self.dialect = dialect
        self.cur = cur
        self.keyring = keyring
        self._dt_in = dialect.datetime_in
        self._dt_out = dialect.datetime_out

    def _run(self, st: Statement, values: dict[str, Any]) -> Any:
        self.cur.execute(st.sql, st.params(values))
        return self.cur

    def _opt_dt(self, v: Any) -> datetime | None:
        return None if v is None else self._dt_out(v)

    def _case(self, row: Sequence[Any]) -> CaseRecord:
        dt = self._dt_out
        clocks = row[12]
        return CaseRecord(row[0], row[1], row[2], row[3], bool(row[4]), loads(row[5]), row[6],
                          dt(row[7]), dt(row[8]), row[9], row[10], row[11],
                          loads(clocks) if clocks and clocks != "{}" else {},
                          bool(row[13]), self._opt_dt(row[14]), row[15], self._opt_dt(row[16]),
                          row[17], row[18], self._due_out(row[19]), row[20])

    def _due_out(self, v: Any) -> datetime | None:
        """A stored next deadline (the far sentinel: none)."""
        if v is None:
            return None
        d = self._dt_out(v)
        return None if d == FAR_DT else d

    def record(self, row: Sequence[Any]) -> CaseRecord:
        """A stored case row (the columns of ``lock_case``) as a record."""
        return self._case(row)

    def _seal_parts(self, row: Sequence[Any]) -> list[Any]:
        """The sealed columns of a stored case row (all but the seal), times as datetimes."""
        parts = [*row[:17], *row[18:21]]
        for i in (7, 8, 14, 16):
            parts[i] = self._opt_dt(parts[i])
        parts[18] = self._due_out(parts[18])
        for i in (4, 13):
            parts[i] = bool(parts[i])
        return parts

    def row_problem(self, row: Sequence[Any]) -> str | None:
        """Why a stored case row is not what the engine wrote (its seal does not hold), or
        None; always None without a keyring."""
        if self.keyring is None:
            return None
        if row[17] is None:
            return ("the case is not sealed: it was written before keyed histories, or its "
                    "seal was removed (run `casework rekey` once after upgrading)")
        if not seal_holds(self.keyring, row[17], self._seal_parts(row)):
            return "its row does not match its seal: it was altered outside the engine"
        return None

    def _event(self, row: Sequence[Any]) -> EventRecord:
        return EventRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                           self._dt_out(row[8]), loads(row[9]), loads(row[10]), row[11],
                           row[12], row[13], row[14], row[15])

    def _timer(self, row: Sequence[Any]) -> TimerRecord:
        return TimerRecord(row[0], row[1], row[2], row[3], row[4], row[5], self._dt_out(row[6]),
                           row[7], loads(row[8]))

    # -- cases and events ------------------------------------------------
    def get_case(self, case_id: str) -> CaseRecord | None:
        row = self._run(self.sql.get_case, {"id": case_id}).fetchone()
        return self._case(row) if row is not None else None

    def history(self, case_id: str) -> list[EventRecord]:
        return [self._event(r) for r in self._run(self.sql.history, {"id": case_id}).fetchall()]

    def event_at(self, case_id: str, seq: int) -> EventRecord | None:
        row = self._run(self.sql.event_at, {"id": case_id, "seq": seq}).fetchone()
        return self._event(row) if row is not None else None

    def event_by_key(self, key: str) -> EventRecord | None:
        row = self._run(self.sql.event_by_key, {"key": key}).fetchone()
        return self._event(row) if row is not None else None

    def verify_case(self, case_id: str) -> list[str]:
        """Problems in the event chain of one case and in its row (empty when intact); each
        names the event altered, missing or inserted (see :func:`verify_chain`), or what of
        the row disagrees with its seal or with its history."""
        found = self._run(self.sql.ledger.chain, {"id": case_id}).fetchall()
        if not found:
            return []
        return self._check_case(case_id, found)

    def _check_case(self, case_id: str, found: list[Any]) -> list[str]:
        row = found[0]
        n = _CASE_WIDTH
        events = [_RawEvent(r[n:], self._dt_out(r[n + 8])) for r in found if r[n] is not None]
        problems = verify_chain(case_id, events, head=(row[10], row[11]), keyring=self.keyring)
        why = self.row_problem(row)
        if why is not None:
            problems.append(f"case {case_id}: {why}")
        names = ("state", "data", "row_version", "escalation_level")
        problems += fold_problems(case_id, dict(zip(names, (row[3], row[5], row[9], row[6]),
                                                    strict=True)), events, loads)
        return problems

    def verify_all(self, batch: int = 5_000) -> Iterator[tuple[str, list[str]]]:
        """(case id, problems) for every case, from one ordered pass over all events."""
        cur = self._run(self.sql.ledger.chain_all, {})
        pending: list[Any] = []
        while True:
            chunk = cur.fetchmany(batch)
            if not chunk:
                break
            pending.extend(chunk)
            last = pending[-1][0]
            done = [r for r in pending if r[0] != last]
            pending = [r for r in pending if r[0] == last]
            yield from self._check_groups(done)
        yield from self._check_groups(pending)

    def _check_groups(self, rows: list[Any]) -> Iterator[tuple[str, list[str]]]:
        for case_id, group in groupby(rows, key=lambda r: r[0]):
            yield case_id, self._check_case(case_id, list(group))

    def case_batches(self, workflow: str, size: int = 2_000
                     ) -> Iterator[list[tuple[CaseRecord, list[EventRecord]]]]:
        """Every case of ``workflow`` with its events, in batches by id (keyset, so a large
        database is read a batch at a time on both drivers)."""
        after = ""
        while True:
            cases = [self._case(r) for r in self._run(
                self.sql.cases_after, {"workflow": workflow, "after": after, "limit": size}
            ).fetchall()]
            if not cases:
                return
            events: dict[str, list[EventRecord]] = {c.id: [] for c in cases}
            for r in self._run(self.sql.events_between, {"workflow": workflow, "lo": after,
                                                         "hi": cases[-1].id}).fetchall():
                ev = self._event(r)
                if ev.case_id in events:
                    events[ev.case_id].append(ev)
            yield [(c, events[c.id]) for c in cases]
            after = cases[-1].id

    def figure_plan(self, workflow: str) -> str | None:
        row = self._run(self.sql.figure_plan, {"workflow": workflow}).fetchone()
        return row[0] if row is not None else None

    def stored_figures(self, workflow: str
                       ) -> tuple[dict[tuple[str, str, str, str], tuple[float, float]],
                                  dict[tuple[str, int], tuple[str, str, float]]]:
        """The maintained cells and stays of ``workflow`` as stored."""
        cells = {(d, f, v, day): (float(n), float(s)) for d, f, v, day, n, s in self._run(
            self.sql.all_figures, {"workflow": workflow}).fetchall()}
        stays: dict[tuple[str, int], tuple[str, str, float]] = {}
        for c, q, st, d, x in self._run(self.sql.all_stays, {"workflow": workflow}).fetchall():
            key = (c, int(q))
            stays[key] = ("(stored twice)", d, float(x)) if key in stays else (st, d, float(x))
        return cells, stays

    def case_ids(self, workflow: str | None = None) -> list[str]:
        if workflow is None:
            return [r[0] for r in self._run(self.sql.case_ids, {}).fetchall()]
        return [r[0] for r in self._run(self.sql.case_ids_wf, {"workflow": workflow}).fetchall()]

    def open_case_ids(self, workflow: str, which: str) -> list[str]:
        """Open cases of ``workflow``: all (``open``), ``overdue`` or ``at_risk``."""
        st = self.sql.open_cases_where[which]
        return [r[0] for r in self._run(st, {"workflow": workflow}).fetchall()]

    def count_cases(self) -> int:
        return int(self._run(self.sql.count_cases, {}).fetchone()[0])

    def assignments(self, case_id: str) -> list[tuple[str, str, str, datetime | None]]:
        """(slot, who, kind, until) of everyone holding the case."""
        return [(r[0], r[1], r[2], self._opt_dt(r[3]))
                for r in self._run(self.sql.assignments_of, {"id": case_id}).fetchall()]

    def document_refs(self, case_id: str | None = None
                      ) -> list[tuple[str, int, dict[str, Any]]]:
        """(case, event seq, document reference) of every document events carry (of one
        case, or of all)."""
        rows = (self._run(self.sql.events_with_documents, {}) if case_id is None
                else self._run(self.sql.case_events_with_documents, {"id": case_id})).fetchall()
        out = []
        for cid, seq, details in rows:
            for ref in loads(details).get("documents") or []:
                if isinstance(ref, dict):
                    out.append((cid, int(seq), ref))
        return out

    def document(self, sha256: str) -> tuple[str, str, int, bytes | None] | None:
        """(digest, media type, size, content or None) of a stored document."""
        row = self._run(self.sql.get_document, {"sha": sha256}).fetchone()
        if row is None:
            return None
        content = bytes(row[3]) if row[3] is not None else None
        return row[0], row[1], int(row[2]), content

    def count_events(self) -> int:
        return int(self._run(self.sql.ledger.count_events, {}).fetchone()[0])

    def party_counts(self, workflow: str, party_key: str, case_id: str) -> tuple[int, int]:
        """(other cases, other open cases) of the same party in the workflow."""
        row = self._run(self.sql.party_counts, {"workflow": workflow, "party": party_key,
                                                "id": case_id}).fetchone()
        return int(row[0]), int(row[1])

    def open_by_field(self, workflow: str, key: str) -> list[tuple[str | None, int, int]]:
        """(value, open cases, overdue cases) of ``workflow`` per value of data field ``key``."""
        rows = self._run(self.sql.open_by_field(key), {"workflow": workflow}).fetchall()
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    def open_by_state(self, workflow: str) -> list[tuple[str, int, int]]:
        """(state, open cases, overdue cases) of ``workflow``."""
        rows = self._run(self.sql.open_by_state(), {"workflow": workflow}).fetchall()
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    def open_cases_not_on(self, workflow: str, version: str) -> list[tuple[str, str, str]]:
        """(id, version, state) of the open cases of ``workflow`` on another version."""
        rows = self._run(self.sql.open_on_version, {"workflow": workflow, "version": version})
        return [(r[0], r[1], r[2]) for r in rows.fetchall()]

    def workflow_version_list(self, name: str) -> list[str]:
        """The stored versions of a workflow, oldest first."""
        return [r[0] for r in self._run(self.sql.wf_versions, {"name": name}).fetchall()]

    def workflow_definition(self, name: str, version: str) -> str | None:
        row = self._run(self.sql.wf_def, {"name": name, "version": version}).fetchone()
        return row[0] if row is not None else None

    # -- timers, reports, outbox -----------------------------------------
    def pending_timers(self, case_id: str) -> list[TimerRecord]:
        return [self._timer(r) for r in self._run(self.sql.pending_timers, {"id": case_id}).fetchall()]

    def failed_timers(self, limit: int = 500) -> list[TimerRecord]:
        """Timers set aside because they raised when they fired, oldest due first."""
        return [self._timer(r) for r in self._run(self.sql.failed_timers,
                                                  {"limit": limit}).fetchall()]

    def count_pending_due(self, now: datetime) -> int:
        return int(self._run(self.sql.count_pending_due, {"now": self._dt_in(now)}).fetchone()[0])

    def report(self, report_id: int) -> tuple[int, str, str, datetime, dict[str, Any]] | None:
        row = self._run(self.sql.get_report, {"id": report_id}).fetchone()
        if row is None:
            return None
        return row[0], row[1], row[2], self._dt_out(row[3]), loads(row[4])

    def pending_cron(self, workflow: str, name: str) -> bool:
        return self._run(self.sql.pending_cron, {"workflow": workflow, "name": name}).fetchone() is not None

    def pending_outbox(self, now: datetime, limit: int) -> list[OutboxItem]:
        """Undelivered notices nobody holds a live claim on, oldest first."""
        return [tuple(r) for r in self._run(self.sql.pending_outbox,
                                            {"now": self._dt_in(now), "limit": limit}).fetchall()]

    # -- raw rows, for the ledger (persistence.ledger) ---------------------
    def snapshot(self) -> None:
        """Read everything that follows from one snapshot (first in the transaction)."""
        if self.sql.ledger.snapshot is not None:
            self._run(self.sql.ledger.snapshot, {})

    def fetch(self, st: Statement, values: dict[str, Any]) -> list[Any]:
        """The rows of ``st`` as stored: JSON columns as text, times as the driver gives them
        (see :meth:`datetime_out`)."""
        return list(self._run(st, values).fetchall())

    def datetime_out(self, value: Any) -> datetime:
        return self._dt_out(value)

    def datetime_in(self, value: datetime) -> Any:
        return self._dt_in(value)


class Touched:
    """A case one command wrote: as it was locked (None if opened), as written, its new events."""

    __slots__ = ("after", "before", "events")

    def __init__(self, before: CaseRecord | None, after: CaseRecord | None,
                 events: list[EventRecord]) -> None:
        self.before, self.after, self.events = before, after, events


def _snapshot(r: CaseRecord) -> CaseRecord:
    """A copy of the record's fields (its data is replaced, never changed in place, by
    the commands; ``copy.copy`` of a slotted dataclass costs ten times as much)."""
    return CaseRecord(r.id, r.workflow, r.version, r.state, r.final, r.data, r.escalation_level,
                      r.opened_at, r.updated_at, r.row_version, r.last_seq, r.last_hash,
                      r.clocks, r.at_risk, r.overdue_since, r.party_key, r.closed_at, r.seal,
                      r.unit, r.next_due_at, r.next_deadline)


def _indexed(case: CaseRecord) -> tuple[Any, ...]:
    return (case.final, case.party_key, case.unit, case.next_due_at, case.overdue_since)


_CASE_WIDTH = 21  # the case columns before the event columns in a chain row


class _RawEvent:
    """An event row with its JSON columns kept as stored text, for hash checks."""

    __slots__ = ("actor", "at", "case_id", "changes", "command_digest", "details", "from_state",
                 "hash", "idempotency_key", "key_id", "kind", "name", "prev_hash", "role", "seq",
                 "to_state")

    def __init__(self, r: Sequence[Any], at: datetime) -> None:
        (self.case_id, self.seq, self.kind, self.name, self.from_state, self.to_state, self.actor,
         self.role, _, self.changes, self.details, self.idempotency_key, self.prev_hash,
         self.hash, self.key_id, self.command_digest) = r
        self.at = at


class WriteTx(ReadTx):
    """The writes of one command, inside its transaction."""

    def __init__(self, sql: Statements, dialect: Dialect, cur: Any,
                 keyring: Keyring | None = None) -> None:
        super().__init__(sql, dialect, cur, keyring)
        self._pending: tuple[EventRecord, str, str] | None = None
        self.earliest_new_due: datetime | None = None  # of the timers this transaction added
        self.outbox_written = False
        # The indexed columns of each case as last stored (see sql.CASE_INDEXED).
        self._indexed_read: dict[str, tuple[Any, ...]] = {}
        # The cases this transaction wrote since the last :meth:`take_touched`: case id ->
        # (the case as locked, None if new; as written; the events added), for the
        # maintained report figures.
        self._locked: dict[str, CaseRecord] = {}
        self.touched: dict[str, Touched] = {}

    def lock_case(self, case_id: str) -> CaseRecord | None:
        """Read the case and hold it against other writers until commit; a row whose seal
        does not hold raises :class:`RowAltered` (nothing acts on an altered case)."""
        row = self._run(self.sql.lock_case, {"id": case_id}).fetchone()
        if row is None:
            return None
        why = self.row_problem(row)
        if why is not None:
            raise RowAltered(case_id, why)
        rec = self._case(row)
        self._indexed_read[case_id] = _indexed(rec)
        self._locked[case_id] = _snapshot(rec)
        return rec

    def save_workflow_version(self, name: str, version: str, definition: str, source: str,
                              at: datetime) -> bool:
        """Store a definition version once; True if it was new."""
        if self.workflow_definition(name, version) is not None:
            return False
        self._run(self.sql.wf_insert, {"name": name, "version": version, "definition": definition,
                                       "source": source, "created_at": self._dt_in(at)})
        return True

    def chain_event(self, case: CaseRecord, *, kind: str, name: str, from_state: str | None,
                    to_state: str | None, actor: str | None, role: str | None, at: datetime,
                    changes: dict[str, Any], details: dict[str, Any],
                    idempotency_key: str | None, command_digest: str | None = None) -> EventRecord:
        """Build the next event of ``case`` and move the case's chain head to it (in memory)."""
        seq = case.last_seq + 1
        prev = case.last_hash or GENESIS
        cj, dj = dumps(changes), dumps(details)
        kr = self.keyring
        h = event_hash(prev, case.id, seq, kind, name, from_state, to_state, actor, role, at, cj, dj,
                       idempotency_key, kr.key if kr is not None else None, command_digest)
        case.last_seq = seq
        case.last_hash = h
        ev = EventRecord(case.id, seq, kind, name, from_state, to_state, actor, role, at, changes,
                         details, idempotency_key, prev, h,
                         kr.current if kr is not None else None, command_digest)
        self._pending = (ev, cj, dj)
        return ev

    def _case_values(self, case: CaseRecord) -> dict[str, Any]:
        dt = self._dt_in
        data = dumps(case.data)
        clocks = dumps(case.clocks) if case.clocks else "{}"
        if self.keyring is not None:
            case.seal = seal(self.keyring, (
                case.id, case.workflow, case.version, case.state, case.final, data,
                case.escalation_level, case.opened_at, case.updated_at, case.row_version,
                case.last_seq, case.last_hash, clocks, case.at_risk, case.overdue_since,
                case.party_key, case.closed_at, case.unit, case.next_due_at, case.next_deadline))
        return {
            "version": case.version, "state": case.state, "final": case.final, "data": data,
            "escalation_level": case.escalation_level, "updated_at": dt(case.updated_at),
            "row_version": case.row_version, "last_seq": case.last_seq, "last_hash": case.last_hash,
            "clocks": clocks, "at_risk": case.at_risk,
            "overdue_since": dt(case.overdue_since) if case.overdue_since else None,
            "party_key": case.party_key,
            "closed_at": dt(case.closed_at) if case.closed_at else None,
            "seal": case.seal, "unit": case.unit,
            "next_due_at": dt(case.next_due_at if case.next_due_at is not None else FAR_DT),
            "next_deadline": case.next_deadline,
        }

    def seal_of(self, case: CaseRecord) -> str | None:
        """The seal ``case`` gets when written (None without a keyring)."""
        self._case_values(case)
        return case.seal

    def insert_case(self, case: CaseRecord) -> None:
        values = self._case_values(case)
        values.update(id=case.id, workflow=case.workflow, opened_at=self._dt_in(case.opened_at))
        self._run(self.sql.insert_case, values)
        self._indexed_read[case.id] = _indexed(case)
        self.touched[case.id] = Touched(None, case, [])

    def update_case(self, case: CaseRecord, expected_row_version: int) -> None:
        """Write the case if it is still at ``expected_row_version``; else :class:`StaleVersion`."""
        if case.id not in self._locked and case.id not in self.touched:
            stored = self.get_case(case.id)  # written without lock_case: keep what it was
            if stored is not None:
                self._locked[case.id] = stored
        values = self._case_values(case)
        values.update(b_id=case.id, b_expected=expected_row_version)
        now_indexed = _indexed(case)
        if self._indexed_read.get(case.id) == now_indexed:
            cur = self._run(self.sql.update_case, values)  # indexed columns unchanged: left out
        else:
            cur = self._run(self.sql.update_case_full, values)
            self._indexed_read[case.id] = now_indexed
        if cur.rowcount != 1:
            row = self._run(self.sql.row_version, {"id": case.id}).fetchone()
            raise StaleVersion(case.id, expected_row_version, row[0] if row else None)
        t = self.touched.get(case.id)
        if t is None:
            self.touched[case.id] = Touched(self._locked.get(case.id), case, [])
        else:
            t.after = case

    def insert_event(self, ev: EventRecord) -> None:
        """Insert the event last built by :meth:`chain_event`."""
        assert self._pending is not None and self._pending[0] is ev, \
            "insert_event must follow chain_event for the same event"
        _, cj, dj = self._pending
        self._run(self.sql.insert_event, {
            "case_id": ev.case_id, "seq": ev.seq, "kind": ev.kind, "name": ev.name,
            "from_state": ev.from_state, "to_state": ev.to_state, "actor": ev.actor,
            "role": ev.role, "at": self._dt_in(ev.at), "changes": cj, "details": dj,
            "idempotency_key": ev.idempotency_key, "prev_hash": ev.prev_hash, "hash": ev.hash,
            "key_id": ev.key_id, "command_digest": ev.command_digest,
        })
        t = self.touched.get(ev.case_id)
        if t is None:
            self.touched[ev.case_id] = t = Touched(self._locked.get(ev.case_id), None, [])
        t.events.append(ev)

    def take_touched(self) -> dict[str, Touched]:
        """The cases written since the last call (and forget them)."""
        out, self.touched = self.touched, {}
        return out

    # -- maintained report figures -----------------------------------------
    def add_figures(self, workflow: str,
                    cells: Iterable[tuple[tuple[str, str, str, str], tuple[float, float]]],
                    spread: str = "") -> None:
        """Add (n, s) to each ((dim, figure, value, day), (n, s)) cell of ``workflow`` (in
        the row of the cell that ``spread``, a case id, falls to; in key order, so that two
        transactions never wait for each other's cells in a circle)."""
        st = self.sql.add_figures
        shard = zlib.crc32(spread.encode()) % self.dialect.figure_shards
        rows = [st.params({"workflow": workflow, "dim": d, "figure": f, "value": v, "day": day,
                           "shard": shard, "n": n, "s": s})
                for (d, f, v, day), (n, s) in sorted(cells, key=lambda c: (c[0][0], c[0][3], c[0][1],
                                                                          c[0][2]))]
        if rows:
            self.cur.executemany(st.sql, rows)

    def add_stays(self, workflow: str, stays: Iterable[tuple[str, int, str, str, float]]) -> None:
        """Record completed stays: (case id, seq of the event that ended it, state, day, secs)."""
        st = self.sql.insert_stay
        rows = [st.params({"case_id": c, "seq": q, "workflow": workflow, "state": s, "day": d,
                           "secs": x}) for c, q, s, d, x in stays]
        if rows:
            self.cur.executemany(st.sql, rows)

    def last_move(self, case_id: str, before_seq: int) -> tuple[datetime, str] | None:
        """When the case last entered a state before event ``before_seq``, and which."""
        row = self._run(self.sql.last_move, {"id": case_id, "seq": before_seq}).fetchone()
        return (self._dt_out(row[0]), row[1]) if row is not None else None

    def set_figure_plan(self, workflow: str, fingerprint: str, at: datetime) -> None:
        self._run(self.sql.drop_plan, {"b_workflow": workflow})
        self._run(self.sql.insert_plan, {"workflow": workflow, "fingerprint": fingerprint,
                                         "built_at": self._dt_in(at)})

    def start_figure_plan(self, workflow: str, fingerprint: str, at: datetime) -> str | None:
        """Name the definition a workflow's figures follow unless another transaction named
        one first (it waits for that one on PostgreSQL); the stored fingerprint."""
        self._run(self.sql.start_plan, {"workflow": workflow, "fingerprint": fingerprint,
                                        "built_at": self._dt_in(at)})
        return self.figure_plan(workflow)

    def drop_figures(self, workflow: str) -> None:
        """Forget the maintained figures of ``workflow`` (before a rebuild)."""
        self.dialect.lock_figures(self.cur)
        for st in (self.sql.drop_figures, self.sql.drop_all_stays, self.sql.drop_plan):
            self._run(st, {"b_workflow": workflow})

    def count_cases_of(self, workflow: str) -> int:
        return int(self._run(self.sql.count_cases_wf, {"workflow": workflow}).fetchone()[0])

    def set_assignments(self, case_id: str,
                        rows: Iterable[tuple[str, str, str, datetime | None]]) -> None:
        """Replace who holds the case: (slot, who, kind, until) rows."""
        self._run(self.sql.delete_assignments, {"b_case": case_id})
        st = self.sql.insert_assignment
        params = [st.params({"case_id": case_id, "slot": s, "who": w, "kind": k,
                             "until": self._dt_in(u) if u is not None else None})
                  for s, w, k, u in rows]
        if params:
            self.cur.executemany(st.sql, params)

    def put_document(self, sha256: str, media_type: str, size: int, content: bytes | None,
                     at: datetime) -> None:
        """Keep a document once (a second copy of the same content is not stored again)."""
        self._run(self.sql.insert_document, {"sha256": sha256, "media_type": media_type,
                                             "size": size, "content": content,
                                             "created_at": self._dt_in(at)})

    # -- timers ----------------------------------------------------------
    def insert_timers(self, timers: Iterable[NewTimer], now: datetime) -> None:
        timers = list(timers)
        for t in timers:
            if self.earliest_new_due is None or t.due_at < self.earliest_new_due:
                self.earliest_new_due = t.due_at
        st = self.sql.insert_timer
        rows = [st.params({"case_id": t.case_id, "workflow": t.workflow, "kind": t.kind,
                           "name": t.name, "state": t.state, "due_at": self._dt_in(t.due_at),
                           "status": "pending", "payload": dumps(t.payload),
                           "created_at": self._dt_in(now)}) for t in timers]
        if rows:
            self.cur.executemany(st.sql, rows)

    def cancel_timers(self, case_id: str, names: Iterable[str]) -> None:
        st = self.sql.cancel_timers
        rows = [st.params({"b_case": case_id, "b_name": n}) for n in names]
        if rows:
            self.cur.executemany(st.sql, rows)

    def cancel_all_timers(self, case_id: str) -> None:
        self._run(self.sql.cancel_all_timers, {"b_case": case_id})

    def claim_due(self, now: datetime, owner: str, lease_until: datetime,
                  limit: int) -> list[tuple[int, datetime]]:
        """Claim up to ``limit`` due timers (oldest first) that nobody holds a live lease on;
        their ids and due times."""
        rows = [(r[0], self._dt_out(r[1])) for r in self._run(
            self.sql.claim_select, {"now": self._dt_in(now), "limit": limit}).fetchall()]
        st = self.sql.claim_update
        if rows:
            self.cur.executemany(st.sql, [st.params({"b_id": i, "owner": owner,
                                                     "lease": self._dt_in(lease_until)})
                                          for i, _ in rows])
        return rows

    def release_claims(self, ids: Iterable[int], owner: str) -> None:
        """Give back claimed timers not fired yet, so they are claimed again in due order."""
        st = self.sql.release_claim
        rows = [st.params({"b_id": i, "b_owner": owner}) for i in ids]
        if rows:
            self.cur.executemany(st.sql, rows)

    def timer_case(self, timer_id: int) -> str | None:
        """The case a timer belongs to (None for a cron timer or an unknown id)."""
        row = self._run(self.sql.timer_case, {"id": timer_id}).fetchone()
        return row[0] if row is not None else None

    def lock_timer(self, timer_id: int) -> tuple[TimerRecord, str | None] | None:
        row = self._run(self.sql.lock_timer, {"id": timer_id}).fetchone()
        return (self._timer(row), row[9]) if row is not None else None

    def retry_timer(self, timer_id: int) -> bool:
        """Put a failed timer back to be fired (True if it was failed)."""
        return int(self._run(self.sql.retry_timer, {"b_id": timer_id}).rowcount) == 1

    def finish_timer(self, timer_id: int, status: str, at: datetime) -> None:
        self._run(self.sql.finish_timer, {"b_id": timer_id, "status": status, "at": self._dt_in(at)})

    # -- reports and outbox ----------------------------------------------
    def insert_report(self, workflow: str, name: str, at: datetime, timer_id: int | None,
                      payload: dict[str, Any]) -> int:
        row = self._run(self.sql.insert_report, {"workflow": workflow, "name": name,
                                                 "at": self._dt_in(at), "timer_id": timer_id,
                                                 "payload": dumps(payload)}).fetchone()
        return int(row[0])

    def add_outbox(self, name: str, at: datetime, *, case_id: str | None = None,
                   seq: int | None = None, report_id: int | None = None) -> None:
        self.outbox_written = True
        self._run(self.sql.insert_outbox, {"name": name, "case_id": case_id, "seq": seq,
                                           "report_id": report_id, "created_at": self._dt_in(at)})

    def claim_outbox(self, now: datetime, owner: str, lease_until: datetime,
                     limit: int) -> list[OutboxItem]:
        """Claim up to ``limit`` undelivered notices (oldest first) that nobody holds a live
        claim on; another process skips them until they are delivered or the lease ends."""
        rows: list[OutboxItem] = [tuple(r) for r in self._run(
            self.sql.claim_outbox, {"now": self._dt_in(now), "limit": limit}).fetchall()]
        st = self.sql.claim_outbox_row
        if rows:
            lease = self._dt_in(lease_until)
            self.cur.executemany(st.sql, [st.params({"b_id": r[0], "owner": owner, "lease": lease})
                                          for r in rows])
        return rows

    def release_outbox(self, ids: Iterable[int], owner: str) -> None:
        """Give back claimed notices not delivered yet, for any process to claim."""
        st = self.sql.release_outbox_row
        rows = [st.params({"b_id": i, "b_owner": owner}) for i in ids]
        if rows:
            self.cur.executemany(st.sql, rows)

    def mark_delivered(self, outbox_id: int, at: datetime) -> None:
        self._run(self.sql.deliver_outbox, {"b_id": outbox_id, "at": self._dt_in(at)})

    # -- raw rows, for the ledger (persistence.ledger) ---------------------
    def execute(self, st: Statement, values: dict[str, Any]) -> int:
        """Run a write statement; how many rows it touched."""
        return int(self._run(st, values).rowcount)

    def execute_many(self, st: Statement, rows: Iterable[dict[str, Any]]) -> None:
        params = [st.params(r) for r in rows]
        if params:
            self.cur.executemany(st.sql, params)
