"""``timers``: durable timers at scale, on SQLite (``bench/README.md``).

(a) Finding the due timers among 100,000 and then 1,000,000 pending ones with the engine's
own claim query and claim: the ratio large/small must stay near 1. (b) Firing 10,000 due
``warning`` timers with ``Engine.run_due`` beside a raw ``sqlite3`` floor that claims with
the same statements (``floor``: timer and event; ``floor+``: also the case's chain head and
an outbox row); the database is put back as built before every run.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from casework import Engine, FrozenClock, scheduler
from casework.persistence import Store

from tests.petition_steps import case_in

from .base import Ctx, Table, patched, ratios, rotated, spread, target, timed
from .db import PETITION, connect, dumps, insert_sql, remove_db, to_db
from .workload import KEY_ID

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # the scheduler's "now" (a frozen clock)
LEASE = timedelta(minutes=10)
INSERT_BATCH = 50_000
KINDS = ("engine", "floor", "floor+")
GROWTH_TARGET = 2.0  # 10x the pending timers may cost at most 2x (a scan would cost ~10x)


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
    levels: tuple[str, ...] = ("FULL", "NORMAL")


# -- building the database ---------------------------------------------------------------------

@dataclass
class Built:
    db: Path
    case_ids: list[str]
    due_ids: list[int] = field(default_factory=list)
    case_of: dict[int, str] = field(default_factory=dict)  # due timer id -> its case
    due_at: dict[int, str] = field(default_factory=dict)  # due timer id -> its due_at as stored

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"


_INSERT_TIMER = insert_sql("timers", ("case_id", "workflow", "kind", "name", "state", "due_at",
                                      "status", "payload", "created_at"))


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


def _insert(db: Path, rows: Iterable[tuple[Any, ...]]) -> None:
    """executemany in batches of INSERT_BATCH rows, one transaction."""
    conn = connect(db, "OFF")
    try:
        it = iter(rows)
        conn.execute("BEGIN IMMEDIATE")
        while batch := [r for _, r in zip(range(INSERT_BATCH), it, strict=False)]:
            conn.executemany(_INSERT_TIMER, batch)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _one(db: Path, sql: str, *params: Any) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


_DUE = "SELECT count(*) FROM timers WHERE status = 'pending' AND due_at <= ?"


def build_small(db: Path, cfg: Config, seed: int = 7) -> Built:
    """The cases (through the engine), ``pending_small`` far timers and the due ones."""
    remove_db(db)
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL",
                clock=FrozenClock(NOW - timedelta(hours=1))) as engine:
        ids = [case_in(engine, "handling.investigating").id for _ in range(cfg.cases)]
    rng = random.Random(seed)
    rows = list(_far_timers(rng, ids, cfg.pending_small)) + _due_timers(rng, ids, cfg.due)
    rng.shuffle(rows)  # the due timers' ids are spread among the others'
    _insert(db, rows)
    # The oracle, by a full scan that cannot share a mistake with the indexed claim query.
    conn = sqlite3.connect(db)
    try:
        found = conn.execute("SELECT id, case_id, due_at FROM timers NOT INDEXED WHERE "
                             "status = 'pending' AND due_at <= ? ORDER BY id", (_ts(NOW),)).fetchall()
    finally:
        conn.close()
    built = Built(db, ids, [r[0] for r in found], {r[0]: r[1] for r in found},
                  {r[0]: r[2] for r in found})
    if len(built.due_ids) != cfg.due:
        raise RuntimeError(f"expected {cfg.due} due timers, found {len(built.due_ids)}")
    return built


def counts(db: Path) -> dict[str, int]:
    pending = _one(db, "SELECT count(*) FROM timers WHERE status = 'pending'")
    due = _one(db, _DUE, _ts(NOW))
    return {"timers": _one(db, "SELECT count(*) FROM timers"), "pending": pending, "due": due,
            "pending_not_due": pending - due}


# -- (a) finding the due timers ----------------------------------------------------------------

class _Rollback(Exception):
    pass


def _time(fn: Callable[[], None], repeat: int, warm: int = 2) -> dict[str, Any]:
    """Milliseconds of ``repeat`` calls of ``fn`` after ``warm`` untimed ones."""
    for _ in range(warm):
        fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000.0)
    return spread(runs)


FIND = {"find_batch_ms": "claim SELECT, LIMIT {batch}",
        "find_all_ms": "claim SELECT, all {due:,} due",
        "engine_claim_batch_ms": "engine claim_due({batch}): SELECT+UPDATE",
        "empty_sweep_ms": "engine run_due, nothing due (one sweep)",
        "engine_start_ms": "Engine(...) built on the file"}


def measure_find(built: Built, cfg: Config) -> dict[str, Any]:
    """Milliseconds of the claim query for one batch and for all due timers, of the engine's
    claim of one batch, of an empty sweep and of building an ``Engine`` on the file; each
    claim checked against the oracle's due ids."""
    starts = []
    for _ in range(cfg.sweep_repeat):
        t = time.perf_counter()
        Engine(built.url, [PETITION], sqlite_synchronous="FULL", clock=FrozenClock(NOW)).close()
        starts.append((time.perf_counter() - t) * 1000.0)
    out: dict[str, Any] = {"engine_start_ms": spread(starts)}
    store = Store(built.url, sqlite_synchronous="FULL")  # the same statements as the engine's
    engine = Engine(built.url, [PETITION], sqlite_synchronous="FULL", clock=FrozenClock(NOW))
    conn = connect(built.db, "FULL")
    try:
        claim, now_s = store.sql.claim_select, _ts(NOW)
        out["plan"] = " / ".join(r[3] for r in conn.execute(
            f"EXPLAIN QUERY PLAN {claim.sql}", claim.params({"now": now_s, "limit": cfg.batch})))
        got: dict[int, list[int]] = {}

        def find(limit: int) -> Callable[[], None]:
            params = claim.params({"now": now_s, "limit": limit})

            def run() -> None:
                conn.execute("BEGIN")
                got[limit] = [r[0] for r in conn.execute(claim.sql, params).fetchall()]
                conn.execute("COMMIT")
            return run

        out["find_batch_ms"] = _time(find(cfg.batch), cfg.query_repeat)
        out["find_all_ms"] = _time(find(cfg.due + 1), cfg.query_repeat)
        oldest = sorted(built.due_ids, key=lambda i: (built.due_at[i], i))[:cfg.batch]
        if got[cfg.batch] != oldest:
            raise RuntimeError("the claim query's batch is not the oldest due timers")
        if sorted(got[cfg.due + 1]) != built.due_ids:
            raise RuntimeError(f"the claim query found {len(got[cfg.due + 1])} timers, "
                               f"not the {cfg.due} due ones")
        claimed: list[int] = []

        def engine_claim() -> None:
            try:
                with store.write() as tx:
                    claimed[:] = [c[0] for c in tx.claim_due(to_db(NOW), "bench",
                                                             to_db(NOW + LEASE), cfg.batch)]
                    raise _Rollback
            except _Rollback:
                pass

        out["engine_claim_batch_ms"] = _time(engine_claim, cfg.query_repeat)
        if sorted(claimed) != sorted(oldest):
            raise RuntimeError("the engine claimed other timers than the oldest due ones")
        swept: list[int] = []

        def sweep() -> None:  # what every scheduler sweep costs when nothing is due
            r = engine.run_due(now=NOW - timedelta(days=2), batch_size=cfg.batch, owner="bench")
            swept.append(r.fired + r.skipped)

        out["empty_sweep_ms"] = _time(sweep, cfg.sweep_repeat, warm=1)
        if any(swept):
            raise RuntimeError("a sweep two days before NOW fired timers")
    finally:
        conn.close()
        engine.close()
        store.dispose()
    return {**out, **counts(built.db)}


# -- (b) firing them ---------------------------------------------------------------------------

@dataclass
class Snapshot:
    """What a firing run changes, as built: restored before every run."""

    max_ids: dict[str, int]
    events: int  # events are keyed by (case, seq): those added have seq past the case's head
    case_cols: list[str]
    case_rows: list[tuple[Any, ...]]

    def column(self, name: str) -> dict[str, int]:
        """Each case's value of an integer column, by case id."""
        i, at = self.case_cols.index("id"), self.case_cols.index(name)
        return {r[i]: int(r[at]) for r in self.case_rows}


_GROWING = ("outbox", "reports", "timers")


def snapshot(db: Path) -> Snapshot:
    conn = sqlite3.connect(db)
    try:
        max_ids = {t: int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0])
                   for t in _GROWING}
        cur = conn.execute("SELECT * FROM cases ORDER BY id")
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        conn.close()
    return Snapshot(max_ids, _one(db, "SELECT count(*) FROM events"), cols, rows)


def restore(built: Built, snap: Snapshot) -> None:
    """Put the database back as :func:`snapshot` saw it (and the due timers pending)."""
    conn = connect(built.db, "OFF", foreign_keys=False)
    try:
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
    finally:
        conn.close()
    due = _one(built.db, _DUE, _ts(NOW))
    if due != len(built.due_ids):
        raise RuntimeError(f"restore left {due} due timers, not {len(built.due_ids)}")


@dataclass
class FireRun:
    fired: int
    seconds: float
    cron_seconds: float = 0.0  # engine: the part of run_due spent in ensure_cron_timers

    @property
    def per_s(self) -> float:
        return self.fired / self.seconds

    @property
    def firing_per_s(self) -> float:
        return self.fired / (self.seconds - self.cron_seconds)


def fire_engine(built: Built, snap: Snapshot, level: str, batch: int) -> FireRun:
    """``Engine.run_due`` over the due timers, timed (the engine is built untimed)."""
    cron = {"spent": 0.0}  # the part of run_due spent in ensure_cron_timers, timed by wrapping it
    with Engine(built.url, [PETITION], sqlite_synchronous=level, clock=FrozenClock(NOW)) as engine:
        with patched(scheduler, ensure_cron_timers=timed(scheduler.ensure_cron_timers, cron, "spent")):
            t0 = time.perf_counter()
            r = engine.run_due(now=NOW, batch_size=batch, owner="bench", lease=LEASE)
            seconds = time.perf_counter() - t0
        problems = [p for cid in built.case_ids[:3] for p in engine.verify(cid)]
    want = len(built.due_ids)
    if r.fired != want or r.skipped or dict(r.by_kind) != {"warning": want} or problems:
        raise RuntimeError(f"engine run went wrong: {r}, chain problems {problems[:3]}")
    if _one(built.db, "SELECT count(*) FROM events") - snap.events != want:
        raise RuntimeError("the engine did not write one event per timer")
    return FireRun(r.fired, seconds, cron["spent"])


def fire_floor(built: Built, snap: Snapshot, level: str, batch: int, sql: Any,
               plus: bool) -> FireRun:
    """Stdlib sqlite3: claim each batch with the engine's SELECT and UPDATE, then per timer
    BEGIN IMMEDIATE, UPDATE the timer, INSERT one event (``plus``: and UPDATE the case's
    chain head, INSERT an outbox row), COMMIT."""
    claim, mark = sql.claim_select, sql.claim_update
    finish, ins_event, ins_outbox = sql.finish_timer, sql.insert_event, sql.insert_outbox
    last_seq, row_version = snap.column("last_seq"), snap.column("row_version")
    now_s, lease_s = _ts(NOW), _ts(NOW + LEASE)
    due_iso = to_db(NOW + timedelta(days=30)).isoformat()
    h = "ab" * 32
    head = ("UPDATE cases SET row_version = ?, updated_at = ?, last_seq = ?, last_hash = ? "
            "WHERE id = ? AND row_version = ?")
    conn = connect(built.db, level)
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
                    "details": details, "idempotency_key": f"timer:{i}", "prev_hash": h, "hash": h,
                    "key_id": KEY_ID, "command_digest": None}))
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
    added = _one(built.db, "SELECT count(*) FROM events") - snap.events
    if fired != len(built.due_ids) or added != fired:
        raise RuntimeError(f"floor fired {fired} timers, not {len(built.due_ids)}")
    return FireRun(fired, seconds)


def measure_fire(built: Built, cfg: Config, ctx: Ctx) -> dict[str, Any]:
    """Engine and floor runs at each level, alternating."""
    snap = snapshot(built.db)
    store = Store(built.url)
    sql = store.sql  # the engine's compiled statements, for the floor
    store.dispose()
    runs: dict[str, dict[str, list[FireRun]]] = {lv: {k: [] for k in KINDS} for lv in cfg.levels}
    for rep in range(cfg.repeat):
        for level in cfg.levels:
            for kind in rotated(KINDS, rep):
                restore(built, snap)
                r = (fire_engine(built, snap, level, cfg.batch) if kind == "engine"
                     else fire_floor(built, snap, level, cfg.batch, sql, plus=kind == "floor+"))
                runs[level][kind].append(r)
                cron = f", {r.cron_seconds:.2f} s of it the cron check" if kind == "engine" else ""
                ctx.progress(f"run {rep + 1}/{cfg.repeat} {level:<6} {kind:<6} {r.per_s:8.0f} "
                             f"timers/s ({r.fired} in {r.seconds:.2f} s{cron})")
    restore(built, snap)
    out: dict[str, Any] = {}
    for level in cfg.levels:
        per_s = {k: [r.per_s for r in runs[level][k]] for k in KINDS}
        firing = [r.firing_per_s for r in runs[level]["engine"]]
        out[level] = {
            **{k: spread(v) for k, v in per_s.items()},
            "engine_firing_only": spread(firing),
            "engine_cron_check_s": spread([r.cron_seconds for r in runs[level]["engine"]]),
            "ratio_firing_only": ratios(firing, per_s["floor"]),
            "ratio_floor": ratios(per_s["engine"], per_s["floor"]),
            "ratio_floor_plus": ratios(per_s["engine"], per_s["floor+"]),
        }
    return out


# -- the suite ---------------------------------------------------------------------------------

def run(ctx: Ctx) -> dict[str, Any]:
    levels = tuple(lv.strip().upper() for lv in ctx.args.levels.split(",") if lv.strip())
    if not levels or set(levels) - {"FULL", "NORMAL", "EXTRA", "OFF"}:
        raise SystemExit("--levels: FULL, NORMAL, EXTRA or OFF, comma-separated")
    cfg = Config(repeat=ctx.repeat(3), levels=levels)
    if ctx.quick:
        cfg.pending, cfg.pending_small, cfg.due = 100_000, 10_000, 1_000
    db = ctx.work / "timers.db"
    t = time.perf_counter()
    built = build_small(db, cfg)
    ctx.progress(f"built {cfg.cases} cases, {cfg.pending_small:,} far + {cfg.due:,} due timers "
                 f"in {time.perf_counter() - t:.1f} s")
    found = {}
    for size in ("small", "large"):
        if size == "large":
            t = time.perf_counter()
            _insert(db, _far_timers(random.Random(8), built.case_ids, cfg.pending - cfg.pending_small))
            ctx.progress(f"added {cfg.pending - cfg.pending_small:,} far timers in "
                         f"{time.perf_counter() - t:.1f} s")
        f = found[size] = measure_find(built, cfg)
        ctx.progress(f"{f['pending_not_due']:,} pending: " + ", ".join(
            f"{k} {f[k]['median']:.3f} ms" for k in FIND))
    fire = measure_fire(built, cfg, ctx)
    small, large = found["small"], found["large"]
    growth = {k: large[k]["median"] / small[k]["median"] for k in FIND}
    return {
        "config": {"pending": cfg.pending, "pending_small": cfg.pending_small, "due": cfg.due,
                   "cases": cfg.cases, "batch": cfg.batch, "repeat": cfg.repeat,
                   "query_repeat": cfg.query_repeat, "sweep_repeat": cfg.sweep_repeat,
                   "levels": list(cfg.levels)},
        "db_mb": db.stat().st_size / 1e6,
        "find": {"small": small, "large": large, "ratio": growth},
        "fire": fire,
        "targets": [target(f"{k} large/small", v, f"<= {GROWTH_TARGET:g}", v <= GROWTH_TARGET)
                    for k, v in growth.items()],
    }


def table(res: dict[str, Any]) -> Table:
    cfg, find, fire = res["config"], res["find"], res["fire"]
    s, lg = find["small"], find["large"]
    t = Table([f"{cfg['cases']} cases, {cfg['due']:,} due timers, batch {cfg['batch']}; "
               f"database {res['db_mb']:.0f} MB at the end"], fine=True)
    t.add(f"(a) finding the due timers, ms (warm cache); {cfg['query_repeat']} runs each, "
          f"the last two {cfg['sweep_repeat']}; a walk over the pending timers would be ~10x")
    for key, label in FIND.items():
        label = label.format(**cfg)
        t.add(f"  {label}, {s['pending_not_due']:,} pending", s[key], "ms")
        t.add(f"  {label}, {lg['pending_not_due']:,} pending", lg[key], "ms")
        t.add("    large / small", find["ratio"][key], "",
              f"{key} large/small")
    t.add(f"(b) due timers fired per second, {cfg['due']:,} due, batch {cfg['batch']}, "
          f"{cfg['repeat']} runs each")
    for level in cfg["levels"]:
        f = fire[level]
        for key, label in (("engine", "engine run_due, timers/s"),
                           ("engine_firing_only", "  the same less its cron check"),
                           ("engine_cron_check_s", "  its cron check, s"),
                           ("floor", "raw floor (timer + event), timers/s"),
                           ("floor+", "raw floor+ (+ case head, outbox), timers/s"),
                           ("ratio_floor", "engine / floor"), ("ratio_floor_plus", "engine / floor+"),
                           ("ratio_firing_only", "engine less cron check / floor")):
            t.add(f"  {level}: {label}", f[key])
    t.notes.append(f"query plan: {s['plan']}")
    return t
