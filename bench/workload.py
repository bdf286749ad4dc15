"""The reference work: the petition lifecycle through the engine, and its raw-database floor.

One case goes ``open, accept, assign (the four fixes), decide, reply,
return_visit, archive``; one case in four is unsatisfied at the first return
visit and goes ``continue_work, return_visit`` again before ``archive``. That is
7 or 9 steps (7.5 on average), each one command and one transaction. The steps are
the tests' standard commands (``tests/petition_steps.py``: actors, input, registration
data), so the benchmark drives the petition the way the tests do.

The floor does, with the database driver and nothing else, what every step costs the
database at least: a one-row ``UPDATE`` of the case, a one-row ``INSERT`` of the event,
``COMMIT``; on the engine's own schema, with the same pragmas, the same payload sizes and
the same number of transactions. The engine's ``open`` inserts the case instead of
updating it; the floor pre-inserts its cases (untimed) and updates them on every step.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casework import Engine

from tests.petition_steps import CLERK, OPEN_DATA, STANDARD

from .db import PETITION, connect, dumps, insert_sql, make_schema, remove_db, row_template

Step = tuple[str, str, dict[str, Any]]  # trigger, actor, input

#: The reference work's steps after ``open``, by the names of the tests' standard commands.
FIRST = ("accept", "assign", "decide", "reply")
UNSATISFIED = ("visit_unsatisfied", "continue_work")
LAST = ("visit_satisfied", "archive")


def lifecycle(i: int) -> list[Step]:
    """The fired steps of case ``i`` after ``open`` (every fourth case is unsatisfied once)."""
    names = (*FIRST, *(UNSATISFIED if i % 4 == 0 else ()), *LAST)
    return [(c.trigger, c.actor, dict(c.data)) for c in (STANDARD[n] for n in names)]


def steps_of(i: int) -> int:
    """Transactions case ``i`` takes: its open plus its fired steps."""
    return 1 + len(lifecycle(i))


@dataclass
class Run:
    """One timed pass: ``steps`` transactions in ``seconds`` (the engine's also keep the
    latency of each ``open`` and ``fire``; a peer's, what its tables held afterwards)."""

    synchronous: str
    steps: int
    seconds: float
    fire_latencies: list[float] = field(default_factory=list, repr=False)  # seconds, one per fire
    open_latencies: list[float] = field(default_factory=list, repr=False)
    check: dict[str, int] = field(default_factory=dict)

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


Around = Callable[[], AbstractContextManager[Any]]


def timed_pass(one: Callable[[int, bool], int], n_cases: int, warmup: int,
               around: Around = nullcontext) -> tuple[int, float]:
    """``warmup`` cases untimed (first calls compile and cache), then ``n_cases`` timed;
    the transactions and the seconds of the timed ones. ``one(i, timed)`` runs case ``i``
    and says how many transactions it took; ``around`` wraps the timed loop (a profiler)."""
    for i in range(warmup):
        one(i, False)
    with around():
        t0 = time.perf_counter()
        steps = sum(one(i, True) for i in range(n_cases))
        seconds = time.perf_counter() - t0
    return steps, seconds


def run_engine(db: Path, synchronous: str, n_cases: int, warmup: int = 5,
               around: Around = nullcontext) -> Run:
    """Open and drive ``n_cases`` petitions to the archive on a fresh SQLite file (the case
    is re-read by each command: the engine keeps no case cache, so the order of the cases
    does not matter)."""
    remove_db(db)
    engine = Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous=synchronous)
    fire_lat: list[float] = []
    open_lat: list[float] = []
    try:
        steps, seconds = timed_pass(
            lambda i, timed: _run_case(engine, i, fire_lat if timed else None,
                                       open_lat if timed else None), n_cases, warmup, around)
    finally:
        engine.close()
        remove_db(db)
    return Run(synchronous, steps, seconds, fire_lat, open_lat)


# -- the floor ---------------------------------------------------------------------------------

def computed(trigger: str, data: Mapping[str, Any], actor_id: str, now: str) -> dict[str, Any]:
    """The values the definition sets on ``trigger`` (petition.yaml ``set:``)."""
    if trigger == "open":
        return {"first_handler": actor_id, "petition_count": data.get("petition_count") or 1}
    if trigger == "accept":
        return {"accepted_at": now}
    if trigger == "reply":
        return {"replied_at": now}
    if trigger == "return_visit":
        return {"visit_count": (data.get("visit_count") or 0) + 1, "last_visit_at": now}
    if trigger == "archive":
        return {"archived_at": now}
    return {}


def floor_payloads() -> list[tuple[str, str, str]]:
    """(event name, changes JSON, case data JSON) for each step of the longer lifecycle.

    The sizes follow what the engine writes: the case data grows as steps add fields.
    """
    stamp = "2026-01-05T09:00:00.000000+00:00"
    data: dict[str, Any] = {**OPEN_DATA, **computed("open", OPEN_DATA, CLERK.partition(":")[2], stamp)}
    out = [("open", dumps(data), dumps(data))]
    for trigger, _, inp in lifecycle(0):
        changes = {**inp, **computed(trigger, data, "", stamp)}
        data.update(changes)
        out.append((trigger, dumps(changes), dumps(data)))
    return out


SQLITE_STAMP = "2026-01-05 09:00:00.000000"
HASH = "ab" * 32
EVENT_COLS = ("case_id", "seq", "kind", "name", "from_state", "to_state", "actor", "role", "at",
              "changes", "details", "idempotency_key", "prev_hash", "hash", "key_id",
              "command_digest")
_UPDATE = ("UPDATE cases SET state = ?, final = ?, data = ?, updated_at = ?, "
           "row_version = ?, last_seq = ?, last_hash = ? WHERE id = ? AND row_version = ?")


class Floor:
    """The floor's statements on the engine's schema, on a stdlib ``sqlite3`` connection
    (autocommit, ``BEGIN IMMEDIATE`` per step) or a psycopg one (``pg``: autocommit off)."""

    def __init__(self, conn: Any, stamp: Any, pg: bool = False) -> None:
        self.conn, self.stamp, self.pg = conn, stamp, pg
        self.mark = "%s" if pg else "?"
        cols, values = row_template("events", dict.fromkeys(EVENT_COLS), stamp)
        extra = [(c, v) for c, v in zip(cols, values, strict=True) if c not in EVENT_COLS]
        self.extra = [v for _, v in extra]  # NOT NULL columns beyond the ones named here
        self.insert_event = insert_sql("events", [*EVENT_COLS, *(c for c, _ in extra)], self.mark)
        self.update = _UPDATE.replace("?", self.mark)

    def _begin(self) -> None:
        if not self.pg:
            self.conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self.pg:
            self.conn.commit()
        else:
            self.conn.execute("COMMIT")

    def add_cases(self, ids: list[str], data: str) -> None:
        """The cases the steps update, in one transaction (untimed)."""
        known = {"id": None, "workflow": "petition", "version": "v", "state": "registered",
                 "final": False, "data": data, "escalation_level": 0, "opened_at": self.stamp,
                 "updated_at": self.stamp, "row_version": 1, "last_seq": 0, "last_hash": "",
                 "clocks": "{}", "at_risk": False}
        cols, row = row_template("cases", known, self.stamp)
        at = cols.index("id")
        self._begin()
        cur = self.conn.cursor()
        cur.executemany(insert_sql("cases", cols, self.mark),
                        [(*row[:at], cid, *row[at + 1:]) for cid in ids])
        cur.close()
        self._commit()

    def step(self, cid: str, seq: int, payload: tuple[str, str, str], state: str,
             to_state: str) -> None:
        """One transaction: UPDATE the case, INSERT its event, COMMIT."""
        name, changes, data = payload
        self._begin()
        self.conn.execute(self.update, (state, False, data, self.stamp, seq + 1, seq, HASH, cid, seq))
        self.conn.execute(self.insert_event, (cid, seq, "transition", name, "from", to_state, "chen",
                                              "handler", self.stamp, changes, "{}", None, HASH, HASH, None,
                                              None, *self.extra))
        self._commit()


def sqlite_floor(db: Path, synchronous: str, n_cases: int) -> tuple[sqlite3.Connection, Floor]:
    """A fresh file with the engine's schema, the pragmas and ``n_cases`` cases to update."""
    remove_db(db)
    make_schema(f"sqlite:///{db}")
    conn = connect(db, synchronous)
    floor = Floor(conn, SQLITE_STAMP)
    floor.add_cases([f"{i:032x}" for i in range(n_cases)], "{}")
    return conn, floor


def run_floor(db: Path, synchronous: str, n_cases: int, warmup: int = 5) -> Run:
    """Stdlib sqlite3: per step BEGIN IMMEDIATE, UPDATE one case, INSERT one event, COMMIT."""
    conn, floor = sqlite_floor(db, synchronous, warmup + n_cases)
    payloads = floor_payloads()

    def case(row: int, i: int) -> int:
        """Case ``i``'s transactions on the case inserted as number ``row``."""
        cid, n = f"{row:032x}", steps_of(i)
        for seq in range(1, n + 1):
            floor.step(cid, seq, payloads[min(seq - 1, len(payloads) - 1)], "state", "to")
        return n

    try:
        total, seconds = timed_pass(lambda i, timed: case(warmup + i if timed else i, i),
                                    n_cases, warmup)
    finally:
        conn.close()
        remove_db(db)
    return Run(synchronous, total, seconds)
