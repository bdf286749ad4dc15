"""Durable timers at scale: ``python -m bench.timers [--quick]`` (or ``main(argv)``).

A SQLite file holds a few hundred petitions opened through the engine and, inserted
beside them with plain ``sqlite3`` ``executemany`` (fast), 1,000,000 pending timers due
far in the future plus 10,000 ``warning`` timers due now, spread over those cases.

(a) **Finding the due timers.** The engine's own compiled claim query
(``persistence.sql`` ``claim_select``: pending, ``due_at <= now``, lease free, ``ORDER BY
due_at, id LIMIT n``) is timed for one batch (200) and for all the due timers, and the
engine's whole claim (``WriteTx.claim_due``: that SELECT and the UPDATE of the claimed
rows, in ``BEGIN IMMEDIATE``, rolled back) for one batch; first with 100,000 pending
timers, then again after the rest are added. The ratio 1M / 100k must stay near 1: a
query that walked the pending timers would take about 10 times longer.

(b) **Firing them.** ``Engine.run_due(now, batch_size=200)`` fires the due timers (each
a ``warning``: one event on its case, in its own transaction), timed, beside the raw
floor in the same run: stdlib ``sqlite3`` claiming each batch with the same SELECT and
UPDATE, then per timer one transaction that updates the timer row and inserts one event
row; same pragmas (WAL, ``synchronous`` FULL, the engine's default, and NORMAL). A second
floor, ``floor+``, also writes what the engine writes besides: the case row (its chain
head) and an outbox row. Between runs the database is put back exactly as it was built
(the rows the run added are deleted, the timers and cases restored), so every run
fires the same timers on the same data. Engine and floor runs alternate; each ratio is
the median of per-repeat ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from casework import Engine, scheduler
from casework.clock import FrozenClock, to_db
from casework.persistence.sql import Statements
from casework.persistence.tx import dumps

from .stats import Spread, at_least, num, progress_printer
from .workload import CLERK, FOUR_FIXES, LEADER, OPEN_DATA, PETITION, TRIAGE, remove_db

fnum = partial(num, fine=True)  # timings below 1 ms keep three decimals
NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # the scheduler's "now" (a frozen clock)
LEASE = timedelta(minutes=10)
INSERT_BATCH = 50_000
LEVELS = ("FULL", "NORMAL")
KINDS = ("engine", "floor", "floor+")
FIND_FIGURES = ("find_batch_ms", "find_all_ms", "engine_claim_batch_ms", "empty_sweep_ms",
                "engine_start_ms")
GROWTH_TARGET = 2.0  # 10x the pending timers may cost at most 2x (a scan would cost ~10x)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _ts(when: datetime) -> str:
    """A naive-UTC instant as the engine stores it in SQLite."""
    return to_db(when).isoformat(sep=" ", timespec="microseconds")


@dataclass
class Config:
    pending: int = 1_000_000
    pending_small: int = 100_000
    due: int = 10_000
    cases: int = 300
    batch: int = 200
    repeat: int = 3
    query_repeat: int = 15
    sweep_repeat: int = 3
    levels: tuple[str, ...] = LEVELS
    tmpdir: Path | None = None
    quick: bool = False
    command: str = ""


# -- building the database ---------------------------------------------------------------------

@dataclass
class Built:
    db: Path
    case_ids: list[str]
    due_ids: list[int] = field(default_factory=list)
    case_of: dict[int, str] = field(default_factory=dict)  # due timer id -> its case
    due_at: dict[int, str] = field(default_factory=dict)  # due timer id -> its due_at as stored


_TIMER_COLS = ("case_id", "workflow", "kind", "name", "state", "due_at", "status", "payload",
               "created_at")
_INSERT_TIMER = (f"INSERT INTO timers ({', '.join(_TIMER_COLS)}) "
                 f"VALUES ({', '.join('?' * len(_TIMER_COLS))})")


def _far_timers(rng: random.Random, case_ids: list[str], n: int) -> Iterator[tuple[Any, ...]]:
    """Pending timers due between 30 days and 3 years after NOW (warnings and breaches)."""
    created = _ts(NOW - timedelta(hours=1))
    for _ in range(n):
        due = NOW + timedelta(days=30, seconds=rng.randrange(3 * 365 * 86_400))
        due_iso = to_db(due).isoformat()
        if rng.random() < 0.5:
            kind, payload = "warning", {"deadline": "handling", "share": 0.5, "due": due_iso}
        else:
            kind, payload = "breach", {"deadline": "handling", "due": due_iso, "rung_due": due_iso}
        yield (rng.choice(case_ids), "petition", kind, "handling", "handling", _ts(due), "pending",
               dumps(payload), created)


def _due_timers(rng: random.Random, case_ids: list[str], n: int) -> list[tuple[Any, ...]]:
    """``warning`` timers due in the day before NOW, round-robin over the cases."""
    created = _ts(NOW - timedelta(days=40))
    out = []
    for i in range(n):
        due = NOW - timedelta(seconds=1 + rng.randrange(86_400))
        deadline_due = (due + timedelta(days=30)).replace(tzinfo=None).isoformat()
        out.append((case_ids[i % len(case_ids)], "petition", "warning", "handling", "handling",
                    _ts(due), "pending",
                    dumps({"deadline": "handling", "share": 0.5, "due": deadline_due}), created))
    return out


def _connect(db: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON",
                   "busy_timeout=30000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def _insert(conn: sqlite3.Connection, rows: Iterator[tuple[Any, ...]] | list[tuple[Any, ...]]) -> int:
    """executemany in batches of INSERT_BATCH rows, one transaction."""
    n = 0
    it = iter(rows)
    conn.execute("BEGIN IMMEDIATE")
    while True:
        batch = [r for _, r in zip(range(INSERT_BATCH), it, strict=False)]
        if not batch:
            break
        conn.executemany(_INSERT_TIMER, batch)
        n += len(batch)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return n


def build_small(db: Path, cfg: Config, seed: int = 7) -> Built:
    """The cases (through the engine), ``pending_small`` far timers and the due ones."""
    remove_db(db)
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL",
                clock=FrozenClock(NOW - timedelta(hours=1))) as engine:
        ids = []
        for _ in range(cfg.cases):
            c = engine.open_case("petition", OPEN_DATA, actor=CLERK)
            engine.fire(c.id, "accept", actor=TRIAGE)
            engine.fire(c.id, "assign", actor=LEADER, data=FOUR_FIXES)
            ids.append(c.id)
    rng = random.Random(seed)
    rows = list(_far_timers(rng, ids, cfg.pending_small)) + _due_timers(rng, ids, cfg.due)
    rng.shuffle(rows)  # the due timers' ids are spread among the others'
    conn = _connect(db, "OFF")
    try:
        _insert(conn, rows)
        # The oracle, by a full scan that cannot share a mistake with the indexed claim query.
        found = conn.execute("SELECT id, case_id, due_at FROM timers NOT INDEXED WHERE status = 'pending' "
                             "AND due_at <= ? ORDER BY id", (_ts(NOW),)).fetchall()
    finally:
        conn.close()
    built = Built(db, ids, [r[0] for r in found], {r[0]: r[1] for r in found},
                  {r[0]: r[2] for r in found})
    if len(built.due_ids) != cfg.due:
        raise RuntimeError(f"expected {cfg.due} due timers, found {len(built.due_ids)}")
    return built


def grow(built: Built, cfg: Config, seed: int = 8) -> None:
    """Add pending far timers up to ``cfg.pending``."""
    conn = _connect(built.db, "OFF")
    try:
        _insert(conn, _far_timers(random.Random(seed), built.case_ids,
                                  cfg.pending - cfg.pending_small))
    finally:
        conn.close()


def counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        pending = conn.execute("SELECT count(*) FROM timers WHERE status = 'pending'").fetchone()[0]
        due = conn.execute("SELECT count(*) FROM timers WHERE status = 'pending' AND due_at <= ?",
                           (_ts(NOW),)).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM timers").fetchone()[0]
    finally:
        conn.close()
    return {"timers": total, "pending": pending, "due": due, "pending_not_due": pending - due}


# -- (a) finding the due timers ----------------------------------------------------------------

class _Rollback(Exception):
    pass


def _median_time(fn: Callable[[], None], repeat: int, warm: int = 2) -> tuple[float, list[float]]:
    for _ in range(warm):
        fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), runs


def measure_find(built: Built, cfg: Config) -> dict[str, Any]:
    """Medians (ms) of the claim query for one batch and for all due timers, of the
    engine's claim of one batch, of an empty sweep and of building an ``Engine`` on the
    file; each claim checked against the oracle's due ids."""
    url = f"sqlite:///{built.db}"
    starts = []
    for _ in range(cfg.sweep_repeat):
        t = time.perf_counter()
        Engine(url, [PETITION], sqlite_synchronous="FULL", clock=FrozenClock(NOW)).close()
        starts.append(time.perf_counter() - t)
    with Engine(url, [PETITION], sqlite_synchronous="FULL", clock=FrozenClock(NOW)) as engine:
        sql: Statements = engine.store.sql
        claim = sql.claim_select
        now_s = _ts(NOW)
        conn = _connect(built.db, "FULL")
        try:
            plan = " / ".join(r[3] for r in conn.execute(
                f"EXPLAIN QUERY PLAN {claim.sql}", claim.params({"now": now_s, "limit": cfg.batch})))
            got: dict[int, list[int]] = {}

            def find(limit: int) -> Callable[[], None]:
                params = claim.params({"now": now_s, "limit": limit})

                def run() -> None:
                    conn.execute("BEGIN")
                    got[limit] = [r[0] for r in conn.execute(claim.sql, params).fetchall()]
                    conn.execute("COMMIT")
                return run

            batch_s, batch_runs = _median_time(find(cfg.batch), cfg.query_repeat)
            all_s, all_runs = _median_time(find(cfg.due + 1), cfg.query_repeat)
        finally:
            conn.close()
        oldest = sorted(built.due_ids, key=lambda i: (built.due_at[i], i))[:cfg.batch]
        if got[cfg.batch] != oldest:
            raise RuntimeError("the claim query's batch is not the oldest due timers")
        if sorted(got[cfg.due + 1]) != built.due_ids:
            raise RuntimeError(f"the claim query found {len(got[cfg.due + 1])} timers, "
                               f"not the {cfg.due} due ones")
        claimed: list[int] = []

        def engine_claim() -> None:
            try:
                with engine.store.write() as tx:
                    got_: Any = tx.claim_due(to_db(NOW), "bench", to_db(NOW + LEASE), cfg.batch)
                    # ids, or (id, due_at) pairs in newer code
                    claimed[:] = [c[0] if isinstance(c, tuple) else c for c in got_]
                    raise _Rollback
            except _Rollback:
                pass

        claim_s, claim_runs = _median_time(engine_claim, cfg.query_repeat)
        if sorted(claimed) != sorted(oldest):
            raise RuntimeError("the engine claimed other timers than the oldest due ones")
        swept: list[int] = []

        def sweep() -> None:  # what every scheduler sweep costs when nothing is due
            r = engine.run_due(now=NOW - timedelta(days=2), batch_size=cfg.batch, owner="bench")
            swept.append(r.fired + r.skipped)

        sweep_s, sweep_runs = _median_time(sweep, cfg.sweep_repeat, warm=1)
        if any(swept):
            raise RuntimeError("a sweep two days before NOW fired timers")
    ms = 1000.0
    return {"plan": plan, "find_batch_ms": batch_s * ms, "find_all_ms": all_s * ms,
            "engine_claim_batch_ms": claim_s * ms, "empty_sweep_ms": sweep_s * ms,
            "engine_start_ms": statistics.median(starts) * ms,
            "runs_ms": {"empty_sweep": [r * ms for r in sweep_runs],
                        "engine_start": [r * ms for r in starts],
                        "find_batch": [r * ms for r in batch_runs],
                        "find_all": [r * ms for r in all_runs],
                        "engine_claim_batch": [r * ms for r in claim_runs]},
            **counts(built.db)}


# -- (b) firing them ---------------------------------------------------------------------------

@dataclass
class Snapshot:
    """What a firing run changes, as built: restored before every run."""

    max_ids: dict[str, int]
    events: int  # events are keyed by (case, seq): those added have seq past the case's head
    case_cols: list[str]
    case_rows: list[tuple[Any, ...]]


_GROWING = ("outbox", "reports", "timers")


def snapshot(db: Path) -> Snapshot:
    conn = sqlite3.connect(db)
    try:
        max_ids = {t: int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0])
                   for t in _GROWING}
        events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        cur = conn.execute("SELECT * FROM cases ORDER BY id")
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        conn.close()
    return Snapshot(max_ids, events, cols, rows)


def restore(built: Built, snap: Snapshot) -> None:
    """Put the database back as :func:`snapshot` saw it (and the due timers pending)."""
    conn = _connect(built.db, "OFF")
    try:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("BEGIN IMMEDIATE")
        for t in _GROWING:
            conn.execute(f"DELETE FROM {t} WHERE id > ?", (snap.max_ids[t],))
        conn.executemany("UPDATE timers SET status = 'pending', claimed_by = NULL, "
                         "lease_until = NULL, fired_at = NULL WHERE id = ?",
                         [(i,) for i in built.due_ids])
        sets = ", ".join(f"{c} = ?" for c in snap.case_cols if c != "id")
        idx = snap.case_cols.index("id")
        conn.executemany(f"UPDATE cases SET {sets} WHERE id = ?",
                         [(*[v for k, v in enumerate(r) if k != idx], r[idx]) for r in snap.case_rows])
        conn.execute("DELETE FROM events WHERE seq > "
                     "(SELECT last_seq FROM cases WHERE cases.id = events.case_id)")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        due = conn.execute("SELECT count(*) FROM timers WHERE status = 'pending' AND due_at <= ?",
                           (_ts(NOW),)).fetchone()[0]
    finally:
        conn.close()
    if due != len(built.due_ids):
        raise RuntimeError(f"restore left {due} due timers, not {len(built.due_ids)}")


@dataclass
class FireRun:
    kind: str
    level: str
    fired: int
    seconds: float
    cron_seconds: float = 0.0  # engine: the part of run_due spent in ensure_cron_timers

    @property
    def per_s(self) -> float:
        return self.fired / self.seconds

    @property
    def firing_per_s(self) -> float:
        return self.fired / (self.seconds - self.cron_seconds)


@contextmanager
def cron_check_timer() -> Iterator[list[float]]:
    """Time every ``ensure_cron_timers`` call that ``run_due`` makes (behaviour unchanged)."""
    original = scheduler.ensure_cron_timers
    spent = [0.0]

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    setattr(scheduler, "ensure_cron_timers", timed)  # noqa: B010
    try:
        yield spent
    finally:
        setattr(scheduler, "ensure_cron_timers", original)  # noqa: B010


def _added_events(db: Path, snap: Snapshot) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0]) - snap.events
    finally:
        conn.close()


def fire_engine(built: Built, snap: Snapshot, level: str, batch: int) -> FireRun:
    """``Engine.run_due`` over the due timers, timed (the engine is built untimed)."""
    with Engine(f"sqlite:///{built.db}", [PETITION], sqlite_synchronous=level,
                clock=FrozenClock(NOW)) as engine:
        with cron_check_timer() as cron:
            t0 = time.perf_counter()
            r = engine.run_due(now=NOW, batch_size=batch, owner="bench", lease=LEASE)
            seconds = time.perf_counter() - t0
        probe = built.case_ids[:3]
        problems = [p for cid in probe for p in engine.verify(cid)]
    want = len(built.due_ids)
    if r.fired != want or r.skipped or dict(r.by_kind) != {"warning": want} or problems:
        raise RuntimeError(f"engine run went wrong: {r}, chain problems {problems[:3]}")
    if _added_events(built.db, snap) != want:
        raise RuntimeError("the engine did not write one event per timer")
    return FireRun("engine", level, r.fired, seconds, cron[0])


def fire_floor(built: Built, snap: Snapshot, level: str, batch: int, sql: Statements,
               plus: bool) -> FireRun:
    """Stdlib sqlite3: claim each batch with the engine's SELECT and UPDATE, then per timer
    BEGIN IMMEDIATE, UPDATE the timer, INSERT one event (``plus``: and UPDATE the case's
    chain head, INSERT an outbox row), COMMIT."""
    claim, mark = sql.claim_select, sql.claim_update
    finish, ins_event, ins_outbox = sql.finish_timer, sql.insert_event, sql.insert_outbox
    seq_i = snap.case_cols.index("last_seq")
    idx = snap.case_cols.index("id")
    rv_i = snap.case_cols.index("row_version")
    last_seq = {r[idx]: int(r[seq_i]) for r in snap.case_rows}
    row_version = {r[idx]: int(r[rv_i]) for r in snap.case_rows}
    now_s, lease_s = _ts(NOW), _ts(NOW + LEASE)
    due_iso = to_db(NOW + timedelta(days=30)).isoformat()
    h = "ab" * 32
    head = ("UPDATE cases SET row_version = ?, updated_at = ?, last_seq = ?, last_hash = ? "
            "WHERE id = ? AND row_version = ?")
    conn = _connect(built.db, level)
    fired = 0
    try:
        t0 = time.perf_counter()
        while True:
            conn.execute("BEGIN IMMEDIATE")
            ids = [r[0] for r in conn.execute(claim.sql, claim.params({"now": now_s, "limit": batch}))]
            if ids:
                conn.executemany(mark.sql, [mark.params({"b_id": i, "owner": "floor",
                                                         "lease": lease_s}) for i in ids])
            conn.execute("COMMIT")
            if not ids:
                break
            for i in ids:
                cid = built.case_of[i]
                seq = last_seq[cid] = last_seq[cid] + 1
                details = dumps({"timer": i, "due": now_s, "deadline": "handling", "share": 0.5,
                                 "deadline_due": due_iso})
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(finish.sql, finish.params({"b_id": i, "status": "fired", "at": now_s}))
                conn.execute(ins_event.sql, ins_event.params({
                    "case_id": cid, "seq": seq, "kind": "warning", "name": "handling_warning",
                    "from_state": "handling.investigating", "to_state": "handling.investigating",
                    "actor": "scheduler", "role": "system", "at": now_s, "changes": "{}",
                    "details": details, "idempotency_key": f"timer:{i}", "prev_hash": h, "hash": h}))
                if plus:
                    rv = row_version[cid]
                    cur = conn.execute(head, (rv + 1, now_s, seq, h, cid, rv))
                    if cur.rowcount != 1:
                        raise RuntimeError(f"floor+: case {cid} was not at row version {rv}")
                    row_version[cid] = rv + 1
                    conn.execute(ins_outbox.sql, ins_outbox.params({
                        "name": "warned", "case_id": cid, "seq": seq, "report_id": None,
                        "created_at": now_s}))
                conn.execute("COMMIT")
                fired += 1
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
    if fired != len(built.due_ids) or _added_events(built.db, snap) != fired:
        raise RuntimeError(f"floor fired {fired} timers, not {len(built.due_ids)}")
    return FireRun("floor+" if plus else "floor", level, fired, seconds)


def measure_fire(built: Built, cfg: Config, progress: Progress) -> dict[str, Any]:
    """Engine and floor runs at each level, alternating."""
    snap = snapshot(built.db)
    with Engine(f"sqlite:///{built.db}", [PETITION], clock=FrozenClock(NOW)) as engine:
        sql = engine.store.sql  # the engine's compiled statements, for the floor
    runs: dict[str, dict[str, list[FireRun]]] = {lv: {k: [] for k in KINDS} for lv in cfg.levels}
    for rep in range(cfg.repeat):
        for level in cfg.levels:
            order = KINDS[rep % len(KINDS):] + KINDS[:rep % len(KINDS)]
            for kind in order:
                restore(built, snap)
                if kind == "engine":
                    r = fire_engine(built, snap, level, cfg.batch)
                else:
                    r = fire_floor(built, snap, level, cfg.batch, sql, plus=kind == "floor+")
                runs[level][kind].append(r)
                cron = f", {r.cron_seconds:.2f} s of it the cron check" if kind == "engine" else ""
                progress(f"run {rep + 1}/{cfg.repeat} {level:<6} {kind:<6} {r.per_s:8.0f} timers/s "
                         f"({r.fired} in {r.seconds:.2f} s{cron})")
    restore(built, snap)
    out: dict[str, Any] = {}
    for level in cfg.levels:
        rl = runs[level]
        out[level] = {
            **{k: Spread.of([r.per_s for r in rl[k]]).as_dict() for k in KINDS},
            "engine_firing_only": Spread.of([r.firing_per_s for r in rl["engine"]]).as_dict(),
            "engine_cron_check_s": Spread.of([r.cron_seconds for r in rl["engine"]]).as_dict(),
            "ratio_firing_only": Spread.of([e.firing_per_s / f.per_s for e, f in
                                            zip(rl["engine"], rl["floor"], strict=True)]).as_dict(),
            "ratio_floor": Spread.of([e.per_s / f.per_s for e, f in
                                      zip(rl["engine"], rl["floor"], strict=True)]).as_dict(),
            "ratio_floor_plus": Spread.of([e.per_s / f.per_s for e, f in
                                           zip(rl["engine"], rl["floor+"], strict=True)]).as_dict(),
        }
    return out


# -- the run -----------------------------------------------------------------------------------

def run(cfg: Config, progress: Progress = _quiet) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="casework-timers-", dir=cfg.tmpdir) as tmp:
        db = Path(tmp) / "timers.db"
        t = time.perf_counter()
        built = build_small(db, cfg)
        progress(f"built {cfg.cases} cases, {cfg.pending_small:,} far + {cfg.due:,} due timers "
                 f"in {time.perf_counter() - t:.1f} s")
        small = measure_find(built, cfg)
        progress(f"{small['pending_not_due']:,} pending: find {cfg.batch} "
                 f"{small['find_batch_ms']:.3f} ms, all {small['find_all_ms']:.2f} ms, engine claim "
                 f"{small['engine_claim_batch_ms']:.2f} ms, empty sweep {small['empty_sweep_ms']:.1f} ms")
        t = time.perf_counter()
        grow(built, cfg)
        progress(f"added {cfg.pending - cfg.pending_small:,} far timers in "
                 f"{time.perf_counter() - t:.1f} s")
        large = measure_find(built, cfg)
        progress(f"{large['pending_not_due']:,} pending: find {cfg.batch} "
                 f"{large['find_batch_ms']:.3f} ms, all {large['find_all_ms']:.2f} ms, engine claim "
                 f"{large['engine_claim_batch_ms']:.2f} ms, empty sweep {large['empty_sweep_ms']:.1f} ms")
        fire = measure_fire(built, cfg, progress)
        size_mb = db.stat().st_size / 1e6
    ratios = {k: large[k] / small[k] for k in FIND_FIGURES}
    return {
        "meta": {"date": started.isoformat(timespec="seconds"), "command": cfg.command,
                 "seconds": time.perf_counter() - t0, "python": platform.python_version(),
                 "sqlite": sqlite3.sqlite_version, "db_mb": size_mb},
        "config": {"pending": cfg.pending, "pending_small": cfg.pending_small, "due": cfg.due,
                   "cases": cfg.cases, "batch": cfg.batch, "repeat": cfg.repeat,
                   "query_repeat": cfg.query_repeat, "sweep_repeat": cfg.sweep_repeat,
                   "levels": list(cfg.levels)},
        "find": {"small": small, "large": large, "ratio": ratios,
                 "flat": {k: v <= GROWTH_TARGET for k, v in ratios.items()}},
        "fire": fire,
    }


def format_report(res: dict[str, Any]) -> str:
    meta, cfg, find, fire = res["meta"], res["config"], res["find"], res["fire"]
    s, lg = find["small"], find["large"]
    lines = [
        f"casework timers bench, {meta['date']}; Python {meta['python']}, SQLite {meta['sqlite']}; "
        f"{cfg['cases']} cases, {cfg['due']:,} due timers, batch {cfg['batch']}; "
        f"database {meta['db_mb']:.0f} MB at the end",
        "",
        f"(a) finding the due timers: median of {cfg['query_repeat']} runs, ms (warm cache)",
        f"  query plan: {s['plan']}",
        f"  {'':<44} {'pending':>10} {'pending':>10} {'ratio':>7}",
        f"  {'':<44} {s['pending_not_due']:>10,} {lg['pending_not_due']:>10,} {'large/sm':>7}",
    ]
    labels = {"find_batch_ms": f"claim SELECT, LIMIT {cfg['batch']}",
              "find_all_ms": f"claim SELECT, all {cfg['due']:,} due",
              "engine_claim_batch_ms": f"engine claim_due({cfg['batch']}): SELECT+UPDATE",
              "empty_sweep_ms": "engine run_due, nothing due (one sweep)",
              "engine_start_ms": "Engine(...) built on the file"}
    for key in FIND_FIGURES:
        verdict = "PASS" if find["flat"][key] else "MISS"
        lines.append(f"  {labels[key]:<44} {fnum(s[key]):>10} {fnum(lg[key]):>10} "
                     f"{find['ratio'][key]:>7.2f}  {verdict}")
    lines += [f"  target: ratio <= {GROWTH_TARGET:g} with 10x the pending timers "
              f"(a walk over them would be ~10); the last two: median of {cfg['sweep_repeat']}",
              ""]
    lines.append(f"(b) due timers fired per second, {cfg['due']:,} due, batch {cfg['batch']}: "
                 f"median of {cfg['repeat']} runs (min - max)")
    for level in cfg["levels"]:
        f = fire[level]
        for k, label in (("engine", "engine run_due"),
                         ("engine_firing_only", "  the same less its cron check"),
                         ("floor", "raw floor (timer + event)"),
                         ("floor+", "raw floor+ (+ case head, outbox)")):
            lines.append(f"  {level:<6} {label:<34} {fnum(f[k]['median']):>8} /s "
                         f"({fnum(f[k]['min'])} - {fnum(f[k]['max'])})")
        c = f["engine_cron_check_s"]
        lines.append(f"  {level:<6} {'  (cron check inside run_due, s)':<34} {fnum(c['median']):>8}    "
                     f"({fnum(c['min'])} - {fnum(c['max'])})")
        for k, label in (("ratio_floor", "engine / floor"), ("ratio_floor_plus", "engine / floor+"),
                         ("ratio_firing_only", "engine less cron check / floor")):
            lines.append(f"  {level:<6} {label:<34} {f[k]['median']:>8.2f}    "
                         f"({f[k]['min']:.2f} - {f[k]['max']:.2f})")
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.timers",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 10,000 then 100,000 pending timers, 1,000 due")
    p.add_argument("--repeat", type=at_least(1), default=3, help="firing runs per figure (default 3)")
    p.add_argument("--levels", default="FULL,NORMAL",
                   help="SQLite synchronous levels for the firing runs (default FULL,NORMAL)")
    p.add_argument("--tmpdir", type=Path, default=None, help="where the database file goes")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(args)
    levels = tuple(lv.strip().upper() for lv in a.levels.split(",") if lv.strip())
    if not levels or set(levels) - {"FULL", "NORMAL", "EXTRA", "OFF"}:
        raise SystemExit("--levels: FULL, NORMAL, EXTRA or OFF, comma-separated")
    cfg = Config(repeat=a.repeat, levels=levels, tmpdir=a.tmpdir, quick=a.quick,
                 command=shlex.join(["python", "-m", "bench.timers", *args]))
    if a.quick:
        cfg.pending, cfg.pending_small, cfg.due = 100_000, 10_000, 1_000

    res = run(cfg, progress_printer(a.quiet))
    print(format_report(res))
    if a.out is not None:
        a.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
