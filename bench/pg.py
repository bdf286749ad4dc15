"""``pg``: casework on PostgreSQL (``bench/README.md``): durable ``fire`` per second from
several processes beside a raw psycopg floor, and timers fired per second by several
schedulers, in a throwaway database (skipped, with a note, when no server answers).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from casework import Engine

from tests.petition_steps import CLERK, OPEN_DATA, case_in

from .base import Ctx, Table, ratios, rotated, spread, target
from .db import PETITION, Throwaway, dumps, libpq, make_schema, server_version, to_db
from .workload import Floor, floor_payloads, lifecycle

RATIO_TARGET = 1 / 3
START_TIMEOUT = 180.0
SPAWN = mp.get_context("spawn")


@dataclass
class Config:
    procs: tuple[int, ...] = (1, 2, 4)
    cases: int = 100  # petitions per process per run
    warmup: int = 5
    timers: int = 3000
    timer_cases: int = 100
    schedulers: tuple[int, ...] = (1, 3)
    batch_size: int = 100
    repeat: int = 3


# -- the workers (each its own process) -----------------------------------------------------------

def _worker(body: Callable[..., dict[str, Any]]) -> Callable[..., None]:
    """A worker process: ``body(url, slot, *args, ready)`` does its setup, calls ``ready()``
    (which waits for the start signal) and returns what it measured; that, or the error it
    raised, goes to the parent."""
    @functools.wraps(body)
    def run(url: str, slot: int, *args: Any) -> None:
        *rest, go, queue = args

        def ready() -> None:
            queue.put({"slot": slot, "ready": True})
            if not go.wait(START_TIMEOUT):
                raise RuntimeError("no start signal")

        try:
            queue.put({"slot": slot, **body(url, slot, *rest, ready)})
        except BaseException as e:
            queue.put({"slot": slot, "error": f"{type(e).__name__}: {e}"})
            raise
    return run


@_worker
def _engine_worker(url: str, slot: int, n_cases: int, warmup: int,
                   ready: Callable[[], None]) -> dict[str, Any]:
    """Open cases (untimed), then drive each through its lifecycle with ``Engine.fire``."""
    engine = Engine(url, [PETITION], pool_size=1)
    base = slot * (n_cases + warmup)
    ids = [engine.open_case("petition", OPEN_DATA, actor=CLERK).id for _ in range(warmup + n_cases)]
    for w in range(warmup):
        for trigger, actor, data in lifecycle(base + w):
            engine.fire(ids[w], trigger, actor=actor, data=data)
    ready()
    fires = 0
    t0 = time.time()
    for i in range(n_cases):
        cid = ids[warmup + i]
        for trigger, actor, data in lifecycle(base + warmup + i):
            engine.fire(cid, trigger, actor=actor, data=data)
            fires += 1
    t1 = time.time()
    engine.close()
    return {"count": fires, "t0": t0, "t1": t1}


@_worker
def _floor_worker(url: str, slot: int, n_cases: int, warmup: int,
                  ready: Callable[[], None]) -> dict[str, Any]:
    """Plain psycopg: per step UPDATE one case, INSERT one event, COMMIT."""
    import psycopg

    payloads = floor_payloads()
    base = slot * (n_cases + warmup)
    with psycopg.connect(libpq(url)) as conn:  # autocommit off: one transaction per step
        floor = Floor(conn, datetime(2026, 1, 5, 9, 0), pg=True)
        ids = [f"{slot:04x}{i:028x}" for i in range(warmup + n_cases)]
        floor.add_cases(ids, payloads[0][2])

        def case(cid: str, steps: int) -> int:
            for seq in range(1, steps + 1):
                payload = payloads[min(seq, len(payloads) - 1)]
                # The state changes with every step, as the engine's does (no HOT shortcut).
                floor.step(cid, seq, payload, payload[0], payload[0])
            return steps

        for w in range(warmup):
            case(ids[w], len(lifecycle(base + w)))
        ready()
        count = 0
        t0 = time.time()
        for i in range(n_cases):
            count += case(ids[warmup + i], len(lifecycle(base + warmup + i)))
        t1 = time.time()
    return {"count": count, "t0": t0, "t1": t1}


@_worker
def _scheduler_worker(url: str, slot: int, now_iso: str, batch: int,
                      ready: Callable[[], None]) -> dict[str, Any]:
    """One scheduler process: ``run_due`` until nothing is due."""
    engine = Engine(url, [PETITION], pool_size=1)
    heard = [0]
    engine.on("warned", lambda _n: heard.__setitem__(0, heard[0] + 1))
    now = datetime.fromisoformat(now_iso)
    ready()
    t0 = time.time()
    r = engine.run_due(now=now, owner=f"s{slot}", batch_size=batch, lease=timedelta(minutes=10))
    t1 = time.time()
    engine.close()
    return {"count": r.fired, "skipped": r.skipped, "t0": t0, "t1": t1, "notices": heard[0]}


def run_processes(worker: Callable[..., None], n: int, args: Sequence[Any]) -> list[dict[str, Any]]:
    """Start ``n`` processes of ``worker(args[0], slot, *args[1:], go, queue)``, release them
    together once all have done their setup, and collect what each reports (each worker's
    messages carry its slot)."""
    go = SPAWN.Event()
    queue = SPAWN.Queue()
    procs = [SPAWN.Process(target=worker, args=(args[0], slot, *args[1:], go, queue),
                           daemon=True) for slot in range(n)]
    for p in procs:
        p.start()
    try:
        ready: set[int] = set()
        results: list[dict[str, Any]] = []
        deadline = time.monotonic() + START_TIMEOUT + 600
        while len(results) < n:
            try:
                msg = queue.get(timeout=1)
            except Exception:  # queue.Empty: check on the workers
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"workers died or hung (exit codes {dead})") from None
                continue
            if "error" in msg:
                raise RuntimeError(f"worker {msg['slot']} failed: {msg['error']}")
            if msg.get("ready"):
                ready.add(int(msg["slot"]))
                if len(ready) == n:
                    go.set()
            else:
                results.append(msg)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(10)
    return sorted(results, key=lambda r: int(r["slot"]))


@dataclass
class Measure:
    """One measurement: the work of all processes over the wall time they took together."""

    count: int
    seconds: float
    per_process: list[int]
    notices: int = 0

    @property
    def per_s(self) -> float:
        return self.count / self.seconds

    @classmethod
    def of(cls, results: list[dict[str, Any]]) -> Measure:
        seconds = max(r["t1"] for r in results) - min(r["t0"] for r in results)
        return cls(sum(int(r["count"]) for r in results), seconds,
                   [int(r["count"]) for r in results],
                   sum(int(r.get("notices", 0)) for r in results))


def measure_fire(db: Throwaway, which: str, procs: int, cfg: Config) -> Measure:
    url = db.schema()
    make_schema(url)
    worker = _engine_worker if which == "engine" else _floor_worker
    return Measure.of(run_processes(worker, procs, (url, cfg.cases, cfg.warmup)))


def measure_timers(db: Throwaway, schedulers: int, cfg: Config) -> Measure:
    """Open cases in handling, add ``cfg.timers`` due warning timers, let the schedulers go."""
    import psycopg

    url = db.schema()
    now = datetime.now(UTC).replace(microsecond=0)
    with Engine(url, [PETITION]) as engine:
        ids = [case_in(engine, "handling.investigating").id for _ in range(cfg.timer_cases)]
    due = to_db(now - timedelta(hours=2))
    payload = dumps({"deadline": "handling", "share": 0.5,
                     "due": (now + timedelta(days=30)).isoformat()})
    with psycopg.connect(libpq(url)) as conn:
        conn.execute(
            "INSERT INTO timers (case_id, workflow, kind, name, state, due_at, status, payload, "
            "created_at) SELECT (%(ids)s::text[])[1 + g %% %(m)s], 'petition', 'warning', "
            "'handling', 'handling', %(due)s + g * interval '1 millisecond', 'pending', "
            "%(payload)s, %(due)s FROM generate_series(0, %(n)s - 1) AS g",
            {"ids": ids, "m": len(ids), "due": due, "payload": payload, "n": cfg.timers})
    m = Measure.of(run_processes(_scheduler_worker, schedulers,
                                 (url, now.isoformat(), cfg.batch_size)))
    with psycopg.connect(libpq(url)) as conn:
        keys, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM events "
            "WHERE idempotency_key LIKE 'timer:%%'").fetchone() or (0, 0)
        pending = conn.execute("SELECT count(*) FROM timers WHERE status = 'pending' "
                               "AND due_at <= %s", [to_db(now)]).fetchone()
    if m.count != cfg.timers or keys != cfg.timers or distinct != cfg.timers or pending != (0,):
        raise RuntimeError(f"timers went wrong: fired {m.count}, events {keys} ({distinct} "
                           f"distinct), still pending {pending} of {cfg.timers}")
    return m


# -- the suite -------------------------------------------------------------------------------------

def unreachable(admin_url: str) -> str | None:
    """Why no PostgreSQL server answers at ``admin_url``; None when one does."""
    import psycopg

    try:
        with psycopg.connect(admin_url, connect_timeout=5):
            return None
    except psycopg.OperationalError as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def run(ctx: Ctx) -> dict[str, Any]:
    """Every figure, in one throwaway database."""
    a = ctx.args
    timers = ctx.pick(a.timers, 3000, 300)
    cfg = Config(procs=ctx.pick(a.procs, (1, 2, 4), (1, 2)), cases=ctx.cases(100, 20),
                 timers=timers, timer_cases=min(100, max(1, timers // 10)),
                 schedulers=a.schedulers, batch_size=a.batch_size, repeat=ctx.repeat(3, 1))
    why = unreachable(a.admin_url)
    if why is not None:
        ctx.progress(f"PostgreSQL: skipped, {why}")
        return {"skipped": why, "targets": []}
    db = Throwaway(a.admin_url)
    try:
        server = server_version(db.url, ("synchronous_commit", "fsync"))
        fires: dict[int, dict[str, list[Measure]]] = {p: {"engine": [], "floor": []}
                                                       for p in cfg.procs}
        timer_runs: dict[int, list[Measure]] = {s: [] for s in cfg.schedulers}
        for rep in range(cfg.repeat):
            for p in cfg.procs:
                for which in rotated(("engine", "floor"), rep + p):
                    m = measure_fire(db, which, p, cfg)
                    fires[p][which].append(m)
                    ctx.progress(f"run {rep + 1}/{cfg.repeat} {p} proc {which:<6} "
                                 f"{m.per_s:8.0f}/s ({m.count} in {m.seconds:.2f} s)")
            for s in cfg.schedulers:
                m = measure_timers(db, s, cfg)
                timer_runs[s].append(m)
                ctx.progress(f"run {rep + 1}/{cfg.repeat} {s} scheduler(s) {m.per_s:8.0f} "
                             f"timers/s (split {m.per_process}, {m.notices} notices heard)")
    finally:
        db.drop()
    out: dict[str, Any] = {"postgresql": server, "config": {
        "procs": list(cfg.procs), "cases_per_process": cfg.cases, "warmup_cases": cfg.warmup,
        "timers": cfg.timers, "timer_cases": cfg.timer_cases, "schedulers": list(cfg.schedulers),
        "batch_size": cfg.batch_size, "repeat": cfg.repeat}, "targets": []}
    for p in cfg.procs:
        e, f = [m.per_s for m in fires[p]["engine"]], [m.per_s for m in fires[p]["floor"]]
        out[f"fire_{p}"] = {"processes": p, "engine_fires_per_s": spread(e),
                            "floor_tx_per_s": spread(f), "ratio": ratios(e, f),
                            "fires_per_run": fires[p]["engine"][0].count,
                            "transactions_per_floor_run": fires[p]["floor"][0].count}
        r = out[f"fire_{p}"]["ratio"]["median"]
        out["targets"].append(target(f"{p} proc engine/floor", r, ">= 1/3", r >= RATIO_TARGET))
    for s in cfg.schedulers:
        out[f"timers_{s}"] = {"schedulers": s, "timers_per_s": spread([m.per_s for m in timer_runs[s]]),
                              "split": [m.per_process for m in timer_runs[s]],
                              "notices_heard": [m.notices for m in timer_runs[s]],
                              "timers_per_run": cfg.timers}
    return out


def table(res: dict[str, Any]) -> Table:
    if "skipped" in res:
        return Table([f"PostgreSQL: skipped ({res['skipped']})"])
    cfg = res["config"]
    first = res[f"fire_{cfg['procs'][0]}"]
    t = Table([f"PostgreSQL {res['postgresql']}",
               f"fire: {cfg['cases_per_process']} petitions per process through accept .. archive "
               f"({first['fires_per_run'] / first['processes'] / cfg['cases_per_process']:.2f} "
               f"fires each, one transaction per fire; opened untimed); floor: the same number of "
               f"UPDATE + INSERT + COMMIT; timers: {cfg['timers']:,} due warnings on "
               f"{cfg['timer_cases']} cases, batch {cfg['batch_size']}; {cfg['repeat']} runs each"])
    for p in cfg["procs"]:
        f = res[f"fire_{p}"]
        procs = f"{p} process{'es' if p > 1 else ''}"
        t.add(f"{procs}: engine fire/s", f["engine_fires_per_s"])
        t.add(f"{procs}: raw psycopg floor, tx/s", f["floor_tx_per_s"])
        t.add(f"{procs}: engine / floor", f["ratio"], "", f"{p} proc engine/floor")
    for s in cfg["schedulers"]:
        f = res[f"timers_{s}"]
        t.add(f"{s} scheduler{'s' if s > 1 else ''}: timers fired/s", f["timers_per_s"])
        splits = "; ".join("/".join(str(x) for x in sp) for sp in f["split"])
        t.notes.append(f"{s} scheduler(s): timers fired per process {splits}; warning notices "
                       f"heard {', '.join(str(n) for n in f['notices_heard'])} times for "
                       f"{f['timers_per_run']:,} warnings per run")
    return t
