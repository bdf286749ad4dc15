"""The reference work: the petition lifecycle through the engine, and its raw-SQLite floor.

One case goes ``open, accept, assign (the four fixes), decide, reply,
return_visit, archive``; one case in four is unsatisfied at the first return
visit and goes ``continue_work, return_visit`` again before ``archive``. That is
7 or 9 steps (7.5 on average), each one command and one transaction.

The floor does, with the stdlib ``sqlite3`` module and nothing else, what every
step costs the database at least: ``BEGIN IMMEDIATE``, a one-row ``UPDATE`` of
the case, a one-row ``INSERT`` of the event, ``COMMIT``; on the engine's own
schema, with the same pragmas, the same payload sizes and the same number of
transactions. The engine's ``open`` inserts the case instead of updating it;
the floor pre-inserts its cases (untimed) and updates them on every step.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casework import Engine
from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parent.parent
PETITION = ROOT / "workflows" / "petition.yaml"

CLERK = "clerk:li"
TRIAGE = "triage:zhao"
LEADER = "leader:wang"
HANDLER = "handler:chen"
ARCHIVIST = "archivist:sun"

OPEN_DATA: dict[str, Any] = {
    "petitioner_name": "Zhang San",
    "petitioner_phone": "13800000000",
    "channel": "visit",
    "source": "direct",
    "concerns": "court",
    "summary": "Asks for the enforcement of a 2023 civil judgment that has not been carried out.",
}
FOUR_FIXES: dict[str, Any] = {
    "leader": "wang", "handler": "chen", "unit": "enforcement bureau",
    "due_date": "2026-03-01", "target": "enforce the judgment or explain in writing why not",
}

Step = tuple[str, str, dict[str, Any]]  # trigger, actor, input


def lifecycle(i: int) -> list[Step]:
    """The fired steps of case ``i`` after ``open`` (every fourth case is unsatisfied once)."""
    steps: list[Step] = [
        ("accept", TRIAGE, {}),
        ("assign", LEADER, dict(FOUR_FIXES)),
        ("decide", HANDLER, {"outcome": "explanation",
                             "decision_summary": "The judgment is being enforced; see file."}),
        ("reply", HANDLER, {"reply_summary": "Written reply handed over in person."}),
    ]
    if i % 4 == 0:
        steps += [("return_visit", HANDLER, {"satisfaction": "unsatisfied"}),
                  ("continue_work", HANDLER, {})]
    steps += [("return_visit", HANDLER, {"satisfaction": "satisfied"}),
              ("archive", ARCHIVIST, {})]
    return steps


def steps_of(i: int) -> int:
    """Transactions case ``i`` takes: its open plus its fired steps."""
    return 1 + len(lifecycle(i))


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@dataclass
class EngineRun:
    """One timed pass of ``n_cases`` lifecycles through the engine."""

    synchronous: str
    cases: int
    steps: int
    seconds: float
    fire_latencies: list[float] = field(repr=False)  # seconds, one per fire
    open_latencies: list[float] = field(repr=False)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


def _run_case(engine: Engine, i: int, fire_lat: list[float] | None,
              open_lat: list[float] | None) -> int:
    pc = time.perf_counter
    t = pc()
    case = engine.open_case("petition", OPEN_DATA, actor=CLERK)
    if open_lat is not None:
        open_lat.append(pc() - t)
    n = 1
    for trigger, actor, data in lifecycle(i):
        t = pc()
        engine.fire(case.id, trigger, actor=actor, data=data)
        if fire_lat is not None:
            fire_lat.append(pc() - t)
        n += 1
    if not case.id or n != steps_of(i):  # pragma: no cover - a broken workload
        raise RuntimeError(f"case {i} took {n} steps")
    return n


def run_engine(db: Path, synchronous: str, n_cases: int, warmup: int = 5,
               around: Callable[[], AbstractContextManager[Any]] = nullcontext) -> EngineRun:
    """Open and drive ``n_cases`` petitions to the archive on a fresh SQLite file.

    ``warmup`` cases go first, untimed (first calls compile and cache). The case
    is re-read by each command (the engine keeps no case cache), so the order of
    the cases does not matter. ``around`` wraps the timed loop (a profiler).
    """
    remove_db(db)
    engine = Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous=synchronous)
    try:
        for i in range(warmup):
            _run_case(engine, i, None, None)
        fire_lat: list[float] = []
        open_lat: list[float] = []
        steps = 0
        with around():
            t0 = time.perf_counter()
            for i in range(n_cases):
                steps += _run_case(engine, i, fire_lat, open_lat)
            seconds = time.perf_counter() - t0
    finally:
        engine.close()
        remove_db(db)
    return EngineRun(synchronous, n_cases, steps, seconds, fire_lat, open_lat)


def rechain(events: list[dict[str, Any]], ats: list[Any], case_id: str) -> list[dict[str, Any]]:
    """A case's stored events copied to ``case_id``, each hash recomputed with the engine's
    own :func:`persistence.chain.event_hash` (``ats``: the events' times as datetimes), so
    the copy is a case whose chain verifies."""
    from casework.persistence.chain import GENESIS, event_hash

    prev = GENESIS
    out = []
    for e, at in zip(events, ats, strict=True):
        h = event_hash(prev, case_id, e["seq"], e["kind"], e["name"], e["from_state"],
                       e["to_state"], e["actor"], e["role"], at, e["changes"], e["details"],
                       e["idempotency_key"])
        out.append({**e, "case_id": case_id, "prev_hash": prev, "hash": h})
        prev = h
    return out


# -- the floor ---------------------------------------------------------------------------------

@dataclass
class FloorRun:
    """One timed pass of the same number of raw transactions."""

    synchronous: str
    transactions: int
    seconds: float

    @property
    def tx_per_s(self) -> float:
        return self.transactions / self.seconds


def _dumps(v: Mapping[str, Any]) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _floor_payloads() -> list[tuple[str, str, str]]:
    """(event name, changes JSON, case data JSON) for each step of the longer lifecycle.

    The sizes follow what the engine writes: the case data grows as steps add fields.
    """
    data: dict[str, Any] = {**OPEN_DATA, "first_handler": "li", "petition_count": 1}
    out = [("open", _dumps(data), _dumps(data))]
    stamp = "2026-01-05T09:00:00.000000+00:00"
    for trigger, _, inp in lifecycle(0):
        changes = dict(inp)
        if trigger == "accept":
            changes["accepted_at"] = stamp
        elif trigger == "reply":
            changes["replied_at"] = stamp
        elif trigger == "return_visit":
            changes.update(visit_count=1, last_visit_at=stamp)
        elif trigger == "archive":
            changes["archived_at"] = stamp
        data.update(changes)
        out.append((trigger, _dumps(changes), _dumps(data)))
    return out


_FLOOR_UPDATE = ("UPDATE cases SET state = ?, final = ?, data = ?, updated_at = ?, "
                 "row_version = ?, last_seq = ?, last_hash = ? WHERE id = ? AND row_version = ?")
_EVENT_COLS = ("case_id", "seq", "kind", "name", "from_state", "to_state", "actor", "role", "at",
               "changes", "details", "idempotency_key", "prev_hash", "hash")


def create_engine_schema(db: Path) -> None:
    """The engine's tables, indexes and constraints on an empty SQLite file."""
    from casework.persistence import models

    sa = create_engine(f"sqlite:///{db}")
    try:
        models.metadata.create_all(sa)
    finally:
        sa.dispose()


def _row_template(conn: sqlite3.Connection, table: str,
                  known: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """Columns and values for a row of ``table``, whatever columns the schema has grown.

    Known columns get ``known``'s value; other NOT NULL columns without a default get a
    placeholder of their type, so a new engine column does not break the floor.
    """
    cols: list[str] = []
    row: list[Any] = []
    for _, name, decl, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})"):
        if pk and name == "id":
            continue
        if name in known:
            value = known[name]
        elif notnull and default is None:
            t = str(decl).upper()
            value = 0 if ("INT" in t or "BOOL" in t) else ("2026-01-05 09:00:00.000000"
                                                           if "DATE" in t else "")
        else:
            continue
        cols.append(name)
        row.append(value)
    return cols, row


def run_floor(db: Path, synchronous: str, n_cases: int, warmup: int = 5) -> FloorRun:
    """Stdlib sqlite3: per step BEGIN IMMEDIATE, UPDATE one case, INSERT one event, COMMIT."""
    remove_db(db)
    create_engine_schema(db)
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON",
                       "busy_timeout=10000"):
            conn.execute(f"PRAGMA {pragma}")
        payloads = _floor_payloads()
        at = "2026-01-05 09:00:00.000000"
        ids = [f"{i:032x}" for i in range(warmup + n_cases)]
        known = {"workflow": "petition", "version": "v", "state": "registered", "final": 0,
                 "data": "{}", "escalation_level": 0, "opened_at": at, "updated_at": at,
                 "row_version": 1, "last_seq": 0, "last_hash": "", "clocks": "{}"}
        cols, row = _row_template(conn, "cases", known)
        filled = zip(*_row_template(conn, "events", dict.fromkeys(_EVENT_COLS)), strict=True)
        extra_cols, extra = [], []  # NOT NULL event columns beyond the ones named here
        for c, v in filled:
            if c not in _EVENT_COLS:
                extra_cols.append(c)
                extra.append(v)
        all_cols = [*_EVENT_COLS, *extra_cols]
        insert_event = (f"INSERT INTO events ({', '.join(all_cols)}) "
                        f"VALUES ({', '.join('?' * len(all_cols))})")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT INTO cases (id, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})",
            [(cid, *row) for cid in ids])
        conn.execute("COMMIT")
        h = "ab" * 32

        def case(cid: str, steps: int) -> None:
            for seq in range(1, steps + 1):
                name, changes, data = payloads[min(seq - 1, len(payloads) - 1)]
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_FLOOR_UPDATE, ("state", 0, data, at, seq + 1, seq, h, cid, seq))
                conn.execute(insert_event, (cid, seq, "transition", name, "from", "to", "chen",
                                            "handler", at, changes, "{}", None, h, h, *extra))
                conn.execute("COMMIT")

        for i in range(warmup):
            case(ids[i], steps_of(i))
        total = 0
        t0 = time.perf_counter()
        for i in range(n_cases):
            n = steps_of(i)
            case(ids[warmup + i], n)
            total += n
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
        remove_db(db)
    return FloorRun(synchronous, total, seconds)
