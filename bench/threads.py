"""``threads``: many threads of one process on one Engine (a web server's worker pool).

SQLite at ``synchronous=FULL`` and ``NORMAL``: 1, 4, 8 and 16 threads (``--thread-counts``)
share one Engine, each driving its share of the same petitions through the whole lifecycle
(``open`` .. ``archive``, as ``core``), beside the raw sqlite3 floor of one transaction per
step (``bench.workload.run_floor``, one thread) in the same run; and 8 threads with group
commit switched off (each command its own transaction, still in the lane's order). Every
command's latency is kept (``time.perf_counter`` around each call): p50, p99, max.

PostgreSQL (when a server answers at ``--admin-url``): 8 threads on one Engine as it runs
there (each command its own transaction, side by side), with the write lane's group commit
switched on, and with its statements pipelined (:func:`pipelined_statements`, a prototype
measured here, not shipped; also with 1 thread), beside psycopg's floor with 8 threads (each
its own connection, per step UPDATE + INSERT + COMMIT) and the same floor pipelined (the
three statements in one round trip); and 4 processes, each its own Engine, beside 4 floor
processes (``bench.pg``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from casework import Engine

from .base import Ctx, Table, patched, percentile, ratios, rotated, spread, target
from .db import PETITION, Throwaway, libpq, remove_db, server_version
from .pg import Config as PgConfig
from .pg import measure_fire, unreachable
from .workload import Floor, _run_case, floor_payloads, run_floor, steps_of

LEVELS = ("FULL", "NORMAL")
WARMUP = 5
PG_THREADS = 8
PG_PROCS = 4
TIMEOUT = 600.0


@dataclass
class ThreadRun:
    """One timed pass of ``threads`` threads: ``commands`` in ``seconds``, each command's
    latency, and what the lane did meanwhile (groups committed, commands in them)."""

    threads: int
    commands: int
    seconds: float
    latencies: list[float] = field(default_factory=list, repr=False)
    groups: int = 0
    grouped: int = 0

    @property
    def per_s(self) -> float:
        return self.commands / self.seconds

    def ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000.0


def _together(threads: int, body: Any) -> float:
    """Run ``body(k)`` on ``threads`` threads released together; the wall seconds from the
    release to the last one's end (an error in one is raised here)."""
    go = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            go.wait(TIMEOUT)
            body(k)
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    go.wait(TIMEOUT)
    t0 = time.perf_counter()
    for t in ts:
        t.join(TIMEOUT)
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in ts):
        raise RuntimeError("a thread did not finish")
    return seconds


def drive(engine: Engine, threads: int, n_cases: int) -> ThreadRun:
    """``n_cases`` petitions through their lifecycles, case ``i`` on thread ``i % threads``
    (after ``WARMUP`` untimed cases on this thread)."""
    for i in range(WARMUP):
        _run_case(engine, i, None, None)
    # The lane's own counters, read before and after (an engine older than the lane has none).
    lane = getattr(engine._storage.store, "lane", None)
    g0, c0 = (lane.groups, lane.commands) if lane is not None else (0, 0)
    per_thread: list[list[float]] = [[] for _ in range(threads)]

    def body(k: int) -> None:
        lat = per_thread[k]
        for i in range(k, n_cases, threads):
            _run_case(engine, i, lat, lat)

    seconds = _together(threads, body)
    latencies = [x for lat in per_thread for x in lat]
    commands = sum(steps_of(i) for i in range(n_cases))
    if len(latencies) != commands:  # pragma: no cover - a broken workload
        raise RuntimeError(f"{len(latencies)} commands timed, {commands} expected")
    if engine.verify():
        raise RuntimeError("a hash chain does not verify after the run")
    if lane is None:
        return ThreadRun(threads, commands, seconds, latencies)
    return ThreadRun(threads, commands, seconds, latencies, lane.groups - g0, lane.commands - c0)


def sqlite_run(db: Path, level: str, threads: int, n_cases: int, group: bool = True) -> ThreadRun:
    remove_db(db)
    engine = Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous=level,
                    key_file=db.with_suffix(".key"))
    engine._storage.store.group_commit = group  # (an engine older than the lane ignores it)
    try:
        return drive(engine, threads, n_cases)
    finally:
        engine.close()
        remove_db(db)


@contextmanager
def pipelined_statements() -> Iterator[None]:
    """For measurement only, a prototype the engine does not ship: every PostgreSQL
    transaction of the store in psycopg's pipeline mode (statements sent without waiting for
    their results; a fetch waits, and so does the case's UPDATE, whose row count the
    row-version check reads), so a command takes about 3 round trips instead of 6."""
    from casework.persistence.store import Store
    from casework.persistence.tx import ReadTx

    on, run = Store._on, ReadTx._run

    @contextmanager
    def piped_on(self: Store, conn: Any, write: bool, broken: list[bool]) -> Iterator[Any]:
        with conn.driver_connection.pipeline(), on(self, conn, write, broken) as cur:
            yield cur

    def synced_run(self: ReadTx, st: Any, values: dict[str, Any]) -> Any:
        cur = run(self, st, values)
        if st is self.sql.update_case or st is self.sql.update_case_full:
            cur.connection._pipeline.sync()  # its row count is read at once
        return cur

    with patched(Store, _on=piped_on), patched(ReadTx, _run=synced_run):
        yield


def pg_engine_run(url: str, threads: int, n_cases: int, group: bool,
                  pipelined: bool = False) -> ThreadRun:
    engine = Engine(url, [PETITION])
    engine._storage.store.group_commit = group
    try:
        with pipelined_statements() if pipelined else nullcontext():
            return drive(engine, threads, n_cases)
    finally:
        engine.close()


def pg_floor_run(url: str, threads: int, n_cases: int, pipelined: bool) -> ThreadRun:
    """psycopg, one connection per thread, per step UPDATE + INSERT + COMMIT (``pipelined``:
    the three sent in one round trip), as many transactions as the engine's run."""
    import psycopg

    from .db import make_schema

    make_schema(url)
    payloads = floor_payloads()
    conns = [psycopg.connect(libpq(url)) for _ in range(threads)]
    try:
        floors = [Floor(c, datetime(2026, 1, 5, 9, 0), pg=True) for c in conns]
        ids = [[f"{k:04x}{i:028x}" for i in range(k, n_cases, threads)] for k in range(threads)]
        for f, mine in zip(floors, ids, strict=True):
            f.add_cases(mine, payloads[0][2])

        def body(k: int) -> None:
            f, conn = floors[k], conns[k]
            for cid, i in zip(ids[k], range(k, n_cases, threads), strict=True):
                for seq in range(1, steps_of(i) + 1):
                    payload = payloads[min(seq - 1, len(payloads) - 1)]
                    if pipelined:
                        with conn.pipeline():
                            f.step(cid, seq, payload, payload[0], payload[0])
                    else:
                        f.step(cid, seq, payload, payload[0], payload[0])

        seconds = _together(threads, body)
    finally:
        for c in conns:
            c.close()
    return ThreadRun(threads, sum(steps_of(i) for i in range(n_cases)), seconds)


def _figures(runs: list[ThreadRun]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "commands_per_s": spread([r.per_s for r in runs]),
        "commands_per_run": runs[0].commands,
    }
    if runs[0].latencies:
        out.update({f"{name}_ms": spread([r.ms(p) for r in runs])
                    for name, p in (("p50", 50), ("p99", 99), ("max", 100))})
        groups = [r.grouped / r.groups for r in runs if r.groups]
        if groups:
            out["commands_per_group"] = spread(groups)
    return out


def _sqlite(ctx: Ctx, counts: tuple[int, ...], n_cases: int, repeat: int) -> dict[str, Any]:
    kinds: list[tuple[str, int]] = [("floor", 1), *(("engine", n) for n in counts),
                                    ("ungrouped", 8)]
    runs: dict[str, dict[tuple[str, int], list[ThreadRun]]] = {
        lv: {k: [] for k in kinds} for lv in LEVELS}
    for rep in range(repeat):
        for level in LEVELS:
            for kind, n in rotated(kinds, rep):
                db = ctx.work / f"{kind}-{n}-{level}.db"
                if kind == "floor":
                    f = run_floor(db, level, n_cases, WARMUP)
                    r = ThreadRun(1, f.steps, f.seconds)
                else:
                    r = sqlite_run(db, level, n, n_cases, group=kind == "engine")
                runs[level][(kind, n)].append(r)
                lat = f"  p99 {r.ms(99):6.2f} ms  max {r.ms(100):6.1f} ms" if r.latencies else ""
                ctx.progress(f"run {rep + 1}/{repeat} {level:<6} {kind:<9} {n:>2} thr "
                             f"{r.per_s:7.0f}/s{lat}")
    out: dict[str, Any] = {}
    for level in LEVELS:
        floor = [r.per_s for r in runs[level][("floor", 1)]]
        one = [r.per_s for r in runs[level][("engine", counts[0])]]
        lv: dict[str, Any] = {"floor": _figures(runs[level][("floor", 1)])}
        for kind, n in kinds[1:]:
            rs = runs[level][(kind, n)]
            x = [r.per_s for r in rs]
            lv[f"{kind}_{n}"] = {**_figures(rs), "threads": n, "vs_floor": ratios(x, floor),
                                 f"vs_{counts[0]}_thread": ratios(x, one)}
        out[level.lower()] = lv
    return out


def _pg(ctx: Ctx, n_cases: int, repeat: int) -> dict[str, Any]:
    a = ctx.args
    why = unreachable(a.admin_url)
    if why is not None:
        ctx.progress(f"PostgreSQL: skipped, {why}")
        return {"skipped": why}
    kinds = ("engine_1", "piped_1", "engine", "grouped", "piped", "floor", "pipelined")
    runs: dict[str, list[ThreadRun]] = {k: [] for k in kinds}
    procs: dict[str, list[Any]] = {"engine": [], "floor": []}
    per_proc = max(1, n_cases // PG_PROCS)
    pcfg = PgConfig(cases=per_proc, warmup=WARMUP)
    db = Throwaway(a.admin_url)
    try:
        server = server_version(db.url, ("synchronous_commit", "fsync"))
        for rep in range(repeat):
            for kind in rotated(kinds, rep):
                url = db.schema()
                n = 1 if kind.endswith("_1") else PG_THREADS
                if kind in ("floor", "pipelined"):
                    r = pg_floor_run(url, n, n_cases, pipelined=kind == "pipelined")
                else:
                    r = pg_engine_run(url, n, n_cases, group=kind == "grouped",
                                      pipelined=kind.startswith("piped"))
                runs[kind].append(r)
                lat = f"  p99 {r.ms(99):6.2f} ms" if r.latencies else ""
                ctx.progress(f"run {rep + 1}/{repeat} pg {kind:<9} {n} thr "
                             f"{r.per_s:7.0f}/s{lat}")
            for which in rotated(("engine", "floor"), rep):
                m = measure_fire(db, which, PG_PROCS, pcfg)
                procs[which].append(m)
                ctx.progress(f"run {rep + 1}/{repeat} pg {which:<9} {PG_PROCS} procs "
                             f"{m.per_s:7.0f}/s")
    finally:
        db.drop()
    floor = [r.per_s for r in runs["floor"]]
    out: dict[str, Any] = {"postgresql": server}
    for kind in kinds:
        x = [r.per_s for r in runs[kind]]
        today = [r.per_s for r in runs["engine_1" if kind.endswith("_1") else "engine"]]
        out[kind] = {**_figures(runs[kind]), "threads": runs[kind][0].threads,
                     "vs_floor": ratios(x, floor), "vs_engine": ratios(x, today)}
    e, f = [m.per_s for m in procs["engine"]], [m.per_s for m in procs["floor"]]
    out["processes"] = {"processes": PG_PROCS, "cases_per_process": per_proc,
                        "engine_fires_per_s": spread(e), "floor_tx_per_s": spread(f),
                        "ratio": ratios(e, f)}
    return out


def run(ctx: Ctx) -> dict[str, Any]:
    a = ctx.args
    counts = tuple(sorted(set(a.thread_counts or (1, 4, 8, 16))))
    n_cases = ctx.cases(240, 32)
    repeat = ctx.repeat(3, 1)
    out: dict[str, Any] = {"sqlite": _sqlite(ctx, counts, n_cases, repeat)}
    out["pg"] = _pg(ctx, ctx.cases(96, 16), repeat) if not a.no_pg_threads else {
        "skipped": "--no-pg-threads"}
    steps = [steps_of(i) for i in range(n_cases)]
    out["config"] = {"cases": n_cases, "thread_counts": list(counts), "repeat": repeat,
                     "warmup_cases": WARMUP, "steps_per_case": sum(steps) / len(steps),
                     "pg_threads": PG_THREADS, "pg_processes": PG_PROCS}
    out["targets"] = []
    full, normal = out["sqlite"]["full"], out["sqlite"]["normal"]
    if "engine_8" in full:
        f8, n8 = full["engine_8"], normal["engine_8"]
        r, p99, mx = f8["vs_floor"]["median"], f8["p99_ms"]["median"], f8["max_ms"]["median"]
        out["targets"] += [
            target("FULL 8 threads / floor", r, ">= 1.2", r >= 1.2),
            target("FULL 8 threads p99 ms", p99, "< 5", p99 < 5.0),
            target("FULL 8 threads max ms", mx, "< 50", mx < 50.0)]
        if "engine_1" in normal:
            r1 = n8["vs_1_thread"]["median"]
            out["targets"].append(target("NORMAL 8 threads / 1 thread", r1, ">= 1.0", r1 >= 1.0))
        p99n = n8["p99_ms"]["median"]
        out["targets"].append(target("NORMAL 8 threads p99 ms", p99n, "< 2", p99n < 2.0))
    return out


def table(res: dict[str, Any]) -> Table:
    cfg = res["config"]
    t = Table([f"{cfg['cases']} petition cases x {cfg['steps_per_case']:.2f} steps per run "
               f"(open .. archive, each step one command), shared by the threads of one Engine "
               f"(case i on thread i mod N); {cfg['repeat']} runs each; WAL. floor: raw sqlite3, "
               f"one thread, one transaction per step; ungrouped: group commit off, each command "
               f"its own transaction in the lane's order"], fine=True)
    for level in LEVELS:
        lv = res["sqlite"][level.lower()]
        t.add(f"SQLite {level}")
        t.add("  raw sqlite3 floor, tx/s", lv["floor"]["commands_per_s"])
        for key, f in lv.items():
            if key == "floor":
                continue
            kind, n = key.rsplit("_", 1)
            name = f"  {n} thread{'s' if int(n) > 1 else ''}" + (", ungrouped" if kind != "engine"
                                                                 else "")
            t.add(f"{name}: commands/s", f["commands_per_s"])
            tn = f"{level} {n} threads" if n == "8" and kind == "engine" else ""
            t.add(f"{name}: / floor", f["vs_floor"], "", f"{tn} / floor" if tn else "")
            if n != str(cfg["thread_counts"][0]) or kind != "engine":
                t.add(f"{name}: / 1 thread", f[f"vs_{cfg['thread_counts'][0]}_thread"], "",
                      f"{tn} / 1 thread" if tn else "")
            t.add(f"{name}: p50", f["p50_ms"], "ms")
            t.add(f"{name}: p99", f["p99_ms"], "ms", f"{tn} p99 ms" if tn else "")
            t.add(f"{name}: max", f["max_ms"], "ms", f"{tn} max ms" if tn else "")
            if "commands_per_group" in f:
                t.add(f"{name}: commands per commit", f["commands_per_group"])
    pg = res["pg"]
    if "skipped" in pg:
        t.notes.append(f"PostgreSQL: skipped ({pg['skipped']})")
        return t
    t.add(f"PostgreSQL {pg['postgresql']}; engine: one Engine shared by the threads")
    names = {"engine_1": "1 thread: engine (a transaction per command)",
             "piped_1": "1 thread: engine, statements pipelined (prototype)",
             "engine": f"{cfg['pg_threads']} threads: engine (a transaction per command)",
             "grouped": f"{cfg['pg_threads']} threads: engine, group commit on",
             "piped": f"{cfg['pg_threads']} threads: engine, statements pipelined (prototype)",
             "floor": f"{cfg['pg_threads']} threads: raw psycopg floor, tx/s",
             "pipelined": f"{cfg['pg_threads']} threads: psycopg floor pipelined, tx/s"}
    for kind, name in names.items():
        f = pg[kind]
        t.add(f"  {name}", f["commands_per_s"])
        if kind != "floor":
            t.add(f"  {name}: / floor", f["vs_floor"])
        if kind in ("grouped", "piped", "piped_1"):
            t.add(f"  {name}: / engine", f["vs_engine"])
        if "p99_ms" in f:
            t.add(f"  {name}: p50", f["p50_ms"], "ms")
            t.add(f"  {name}: p99", f["p99_ms"], "ms")
        if "commands_per_group" in f:
            t.add(f"  {name}: commands per commit", f["commands_per_group"])
    p = pg["processes"]
    t.add(f"PostgreSQL, {p['processes']} processes, each its own Engine "
          f"({p['cases_per_process']} petitions each, fires timed)")
    t.add("  engine fire/s", p["engine_fires_per_s"])
    t.add("  raw psycopg floor, tx/s", p["floor_tx_per_s"])
    t.add("  engine / floor", p["ratio"])
    return t
