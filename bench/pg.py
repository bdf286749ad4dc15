"""The PostgreSQL benchmark: ``python -m bench.pg`` (or ``main(argv)``).

Figures, all measured in one run on the local PostgreSQL server, in a throwaway
database created for the run and dropped after it:

* durable ``fire`` per second from 1, 2 and 4 processes, each process with its own
  ``Engine`` on the same database, each driving its own petitions through the
  lifecycle (``accept`` ... ``archive``, one transaction per step; the cases are
  opened beforehand, untimed);
* beside each, the raw floor with the same number of processes: plain ``psycopg``,
  autocommit off, per step a one-row ``UPDATE`` of the case and a one-row ``INSERT``
  of the event and one ``COMMIT``, on the engine's own schema, with the same payloads
  and the same number of transactions; and the ratio engine / floor (target >= 1/3);
* timers fired per second by 1 and by 3 scheduler processes (``Engine.run_due``) over
  a few thousand due ``warning`` timers.

Every measurement gets a fresh schema. Processes start together (a start signal once
all have done their setup); a figure is the work of all processes over the wall time
from the first start to the last finish. Each figure is the median of ``--repeat`` runs; engine and
floor runs alternate, and each ratio is the median of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .stats import Spread, at_least, git_commit, grid, num, progress_printer
from .workload import (
    CLERK,
    FOUR_FIXES,
    LEADER,
    OPEN_DATA,
    PETITION,
    ROOT,
    TRIAGE,
    _floor_payloads,
    lifecycle,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "pg_results.json"
DEFAULT_RESULTS_MD = HERE / "RESULTS.md"
DEFAULT_ADMIN = os.environ.get("CASEWORK_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
RATIO_TARGET = 1 / 3
START_TIMEOUT = 180.0
SPAWN = mp.get_context("spawn")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class Config:
    admin_url: str = DEFAULT_ADMIN
    procs: tuple[int, ...] = (1, 2, 4)
    cases: int = 100  # petitions per process per run
    warmup: int = 5
    timers: int = 3000
    timer_cases: int = 100
    schedulers: tuple[int, ...] = (1, 3)
    batch_size: int = 100
    repeat: int = 3
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- databases ---------------------------------------------------------------------------------


class Throwaway:
    """A database created for one run and dropped after it (``bench.pg``, ``bench.reports``);
    a fresh schema per measurement."""

    def __init__(self, admin_url: str, prefix: str = "casework_bench") -> None:
        import psycopg

        self.admin_url = admin_url
        self.name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"{admin_url.rsplit('/', 1)[0]}/{self.name}"

    def schema(self) -> str:
        """A new, empty schema; the engine URL that works in it."""
        import psycopg

        schema = f"b_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.engine_url}?options=-csearch_path%3D{schema}"

    @property
    def engine_url(self) -> str:
        """The database's URL for an engine (SQLAlchemy with psycopg)."""
        return self.url.replace("postgresql://", "postgresql+psycopg://", 1)

    def drop(self) -> None:
        """Drop the database (trying for a while if the server is restarting)."""
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def libpq(url: str) -> str:
    """An engine URL as a plain libpq URL (the search_path option is kept)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def make_schema(url: str) -> None:
    """The engine's tables in the URL's schema, as the engine makes them."""
    from casework import Engine

    Engine(url, [PETITION]).close()


# -- the workers (each its own process) -----------------------------------------------------------


def _fires_of(case_no: int) -> list[tuple[str, str, dict[str, Any]]]:
    return lifecycle(case_no)


def _engine_worker(url: str, slot: int, n_cases: int, warmup: int, go: Any, queue: Any) -> None:
    """Open cases (untimed), then drive each through its lifecycle with ``Engine.fire``."""
    try:
        from casework import Engine

        engine = Engine(url, [PETITION], pool_size=1)
        base = slot * (n_cases + warmup)
        ids = [engine.open_case("petition", OPEN_DATA, actor=CLERK).id
               for _ in range(warmup + n_cases)]
        for w in range(warmup):
            for trigger, actor, data in _fires_of(base + w):
                engine.fire(ids[w], trigger, actor=actor, data=data)
        _ready(slot, go, queue)
        fires = 0
        t0 = time.time()
        for i in range(n_cases):
            cid = ids[warmup + i]
            for trigger, actor, data in _fires_of(base + warmup + i):
                engine.fire(cid, trigger, actor=actor, data=data)
                fires += 1
        t1 = time.time()
        engine.close()
        queue.put({"slot": slot, "count": fires, "t0": t0, "t1": t1})
    except BaseException as e:
        queue.put({"slot": slot, "error": f"{type(e).__name__}: {e}"})
        raise


_FLOOR_UPDATE = ("UPDATE cases SET state = %s, final = %s, data = %s, updated_at = %s, "
                 "row_version = %s, last_seq = %s, last_hash = %s WHERE id = %s AND row_version = %s")
_EVENT_COLS = ("case_id", "seq", "kind", "name", "from_state", "to_state", "actor", "role", "at",
               "changes", "details", "idempotency_key", "prev_hash", "hash")


def _row_template(conn: Any, table: str, known: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """Columns and values for a row of ``table`` in the connection's schema, whatever columns
    the schema has grown: ``known``'s values, and a placeholder of its type for any other
    NOT NULL column without a default (so a new engine column does not break the floor)."""
    cols: list[str] = []
    row: list[Any] = []
    for name, dtype, nullable, default in conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s ORDER BY ordinal_position", [table]).fetchall():
        if name in known:
            value = known[name]
        elif nullable == "NO" and default is None:
            value = (0 if dtype in ("integer", "bigint", "smallint", "numeric", "double precision")
                     else False if dtype == "boolean"
                     else datetime(2026, 1, 5, 9, 0) if dtype.startswith("timestamp") else "")
        else:
            continue
        cols.append(name)
        row.append(value)
    return cols, row


def _floor_worker(url: str, slot: int, n_cases: int, warmup: int, go: Any, queue: Any) -> None:
    """Plain psycopg: per step UPDATE one case, INSERT one event, COMMIT."""
    try:
        import psycopg

        payloads = _floor_payloads()
        at = datetime(2026, 1, 5, 9, 0)
        h = "ab" * 32
        base = slot * (n_cases + warmup)
        with psycopg.connect(libpq(url)) as conn:  # autocommit off: one transaction per step
            ids = [f"{slot:04x}{i:028x}" for i in range(warmup + n_cases)]
            known = {"id": None, "workflow": "petition", "version": "v", "state": "registered",
                     "final": False, "data": payloads[0][2], "escalation_level": 0,
                     "opened_at": at, "updated_at": at, "row_version": 1, "last_seq": 0,
                     "last_hash": "", "clocks": "{}", "at_risk": False}
            cols, row = _row_template(conn, "cases", known)
            at_id = cols.index("id")
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO cases ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                    [(*row[:at_id], cid, *row[at_id + 1:]) for cid in ids])
            ecols, erow = _row_template(conn, "events", dict.fromkeys(_EVENT_COLS))
            extra_cols = [c for c in ecols if c not in _EVENT_COLS]
            extra = [v for c, v in zip(ecols, erow, strict=True) if c not in _EVENT_COLS]
            insert_event = (f"INSERT INTO events ({', '.join([*_EVENT_COLS, *extra_cols])}) "
                            f"VALUES ({', '.join(['%s'] * (len(_EVENT_COLS) + len(extra_cols)))})")
            conn.commit()

            def case(cid: str, steps: int) -> int:
                for seq in range(1, steps + 1):
                    name, changes, data = payloads[min(seq, len(payloads) - 1)]
                    # The state changes with every step, as the engine's does (no HOT shortcut).
                    conn.execute(_FLOOR_UPDATE, (name, False, data, at, seq + 1, seq, h, cid, seq))
                    conn.execute(insert_event, (cid, seq, "transition", name, "from", name, "chen",
                                                "handler", at, changes, "{}", None, h, h, *extra))
                    conn.commit()
                return steps

            for w in range(warmup):
                case(ids[w], len(_fires_of(base + w)))
            _ready(slot, go, queue)
            count = 0
            t0 = time.time()
            for i in range(n_cases):
                count += case(ids[warmup + i], len(_fires_of(base + warmup + i)))
            t1 = time.time()
        queue.put({"slot": slot, "count": count, "t0": t0, "t1": t1})
    except BaseException as e:
        queue.put({"slot": slot, "error": f"{type(e).__name__}: {e}"})
        raise


def _scheduler_worker(url: str, slot: int, now_iso: str, batch: int, go: Any,
                      queue: Any) -> None:
    """One scheduler process: ``run_due`` until nothing is due."""
    try:
        from casework import Engine

        engine = Engine(url, [PETITION], pool_size=1)
        heard = [0]
        engine.on("warned", lambda _n: heard.__setitem__(0, heard[0] + 1))
        now = datetime.fromisoformat(now_iso)
        _ready(slot, go, queue)
        t0 = time.time()
        r = engine.run_due(now=now, owner=f"s{slot}", batch_size=batch,
                           lease=timedelta(minutes=10))
        t1 = time.time()
        engine.close()
        queue.put({"slot": slot, "count": r.fired, "skipped": r.skipped, "t0": t0, "t1": t1,
                   "notices": heard[0]})
    except BaseException as e:
        queue.put({"slot": slot, "error": f"{type(e).__name__}: {e}"})
        raise


def _ready(slot: int, go: Any, queue: Any) -> None:
    """Tell the parent this worker's setup is done; wait for the start signal."""
    queue.put({"slot": slot, "ready": True})
    if not go.wait(START_TIMEOUT):
        raise RuntimeError("no start signal")


def run_processes(target: Callable[..., None], n: int, args: Sequence[Any]) -> list[dict[str, Any]]:
    """Start ``n`` processes of ``target(args[0], slot, *args[1:], go, queue)``, release them
    together once all have done their setup, and collect what each reports."""
    go = SPAWN.Event()
    queue = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(args[0], slot, *args[1:], go, queue),
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

    processes: int
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
        return cls(len(results), sum(int(r["count"]) for r in results), seconds,
                   [int(r["count"]) for r in results],
                   sum(int(r.get("notices", 0)) for r in results))


def measure_engine(db: Throwaway, procs: int, cfg: Config) -> Measure:
    url = db.schema()
    make_schema(url)
    return Measure.of(run_processes(_engine_worker, procs, (url, cfg.cases, cfg.warmup)))


def measure_floor(db: Throwaway, procs: int, cfg: Config) -> Measure:
    url = db.schema()
    make_schema(url)
    return Measure.of(run_processes(_floor_worker, procs, (url, cfg.cases, cfg.warmup)))


def measure_timers(db: Throwaway, schedulers: int, cfg: Config) -> Measure:
    """Open cases in handling, add ``cfg.timers`` due warning timers, let the schedulers go."""
    import psycopg
    from casework import Engine
    from casework.clock import to_db

    url = db.schema()
    now = datetime.now(UTC).replace(microsecond=0)
    with Engine(url, [PETITION]) as engine:
        ids = []
        for _ in range(cfg.timer_cases):
            cid = engine.open_case("petition", OPEN_DATA, actor=CLERK).id
            engine.fire(cid, "accept", actor=TRIAGE)
            engine.fire(cid, "assign", actor=LEADER, data=FOUR_FIXES)
            ids.append(cid)
    due = to_db(now - timedelta(hours=2))
    payload = json.dumps({"deadline": "handling", "share": 0.5,
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


# -- the run ---------------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, Any]:
    return Spread.of(values).as_dict()


def run_bench(cfg: Config, progress: Progress = _quiet) -> dict[str, Any]:
    """Every figure, in one throwaway database; what ``pg_results.json`` holds."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    db = Throwaway(cfg.admin_url)
    try:
        server = _server_version(db.url)
        fires: dict[int, dict[str, list[Measure]]] = {p: {"engine": [], "floor": []}
                                                       for p in cfg.procs}
        timers: dict[int, list[Measure]] = {s: [] for s in cfg.schedulers}
        for rep in range(cfg.repeat):
            for p in cfg.procs:
                order = ("engine", "floor") if (rep + p) % 2 == 0 else ("floor", "engine")
                for which in order:
                    fn = measure_engine if which == "engine" else measure_floor
                    m = fn(db, p, cfg)
                    fires[p][which].append(m)
                    progress(f"run {rep + 1}/{cfg.repeat} {p} proc {which:<6} "
                             f"{m.per_s:8.0f}/s ({m.count} in {m.seconds:.2f} s)")
            for s in cfg.schedulers:
                m = measure_timers(db, s, cfg)
                timers[s].append(m)
                progress(f"run {rep + 1}/{cfg.repeat} {s} scheduler(s) {m.per_s:8.0f} timers/s "
                         f"(split {m.per_process}, {m.notices} notices heard)")
    finally:
        db.drop()
    figures: dict[str, Any] = {}
    for p in cfg.procs:
        e, f = fires[p]["engine"], fires[p]["floor"]
        figures[f"fire_{p}"] = {
            "processes": p,
            "engine_fires_per_s": _spread([m.per_s for m in e]),
            "floor_tx_per_s": _spread([m.per_s for m in f]),
            "ratio": _spread([a.per_s / b.per_s for a, b in zip(e, f, strict=True)]),
            "fires_per_run": e[0].count,
            "transactions_per_floor_run": f[0].count,
        }
    for s in cfg.schedulers:
        ms = timers[s]
        figures[f"timers_{s}"] = {
            "schedulers": s,
            "timers_per_s": _spread([m.per_s for m in ms]),
            "split": [m.per_process for m in ms],
            "notices_heard": [m.notices for m in ms],
            "timers_per_run": cfg.timers,
        }
    targets = [{"name": f"{p} proc engine/floor", "value": figures[f"fire_{p}"]["ratio"]["median"],
                "target": ">= 1/3",
                "pass": figures[f"fire_{p}"]["ratio"]["median"] >= RATIO_TARGET}
               for p in cfg.procs]
    return {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "command": cfg.command,
            "seconds": time.perf_counter() - t0,
            "python": platform.python_version(),
            "postgresql": server,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_1min": [load_start, os.getloadavg()[0]],
            "commit": git_commit(),
        },
        "config": {"procs": list(cfg.procs), "cases_per_process": cfg.cases,
                   "warmup_cases": cfg.warmup, "timers": cfg.timers,
                   "timer_cases": cfg.timer_cases, "schedulers": list(cfg.schedulers),
                   "batch_size": cfg.batch_size, "repeat": cfg.repeat},
        "figures": figures,
        "targets": targets,
    }


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    return f"{row[0] if row else '?'} (synchronous_commit={sync[0] if sync else '?'}, " \
           f"fsync={fsync[0] if fsync else '?'})"


# -- the table -------------------------------------------------------------------------------------


def format_table(results: dict[str, Any]) -> str:
    meta, cfg, figs = results["meta"], results["config"], results["figures"]
    targets = {t["name"]: t for t in results["targets"]}
    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, s: dict[str, Any], target: str = "") -> None:
        t = targets.get(target)
        rows.append((label, num(s["median"]), f"{num(s['min'])} - {num(s['max'])}",
                     f"{t['target']:<6} {'PASS' if t['pass'] else 'MISS'}" if t else ""))

    for p in cfg["procs"]:
        f = figs[f"fire_{p}"]
        procs = f"{p} process{'es' if p > 1 else ''}"
        row(f"{procs}: engine fire/s", f["engine_fires_per_s"])
        row(f"{procs}: raw psycopg floor, tx/s", f["floor_tx_per_s"])
        row(f"{procs}: engine / floor", f["ratio"], f"{p} proc engine/floor")
    for s in cfg["schedulers"]:
        f = figs[f"timers_{s}"]
        row(f"{s} scheduler{'s' if s > 1 else ''}: timers fired/s", f["timers_per_s"])
    first = figs[f"fire_{cfg['procs'][0]}"]
    lines = [
        f"casework PostgreSQL bench, {meta['date']}, commit {meta['commit']}; Python "
        f"{meta['python']}, PostgreSQL {meta['postgresql']}, {meta['cpus']} CPUs",
        f"fire: {cfg['cases_per_process']} petitions per process through accept .. archive "
        f"({first['fires_per_run'] / first['processes'] / cfg['cases_per_process']:.2f} "
        f"fires each, one transaction per fire; opened untimed); floor: the same number of "
        f"UPDATE + INSERT + COMMIT; timers: {cfg['timers']:,} due warnings on "
        f"{cfg['timer_cases']} cases, batch {cfg['batch_size']}; {cfg['repeat']} runs each",
        "",
    ]
    lines += grid(("figure", "median", "min - max", "target"), rows)
    lines.append("")
    for s in cfg["schedulers"]:
        f = figs[f"timers_{s}"]
        splits = "; ".join("/".join(str(x) for x in sp) for sp in f["split"])
        lines.append(f"{s} scheduler(s): timers fired per process {splits}; warning notices "
                     f"heard {', '.join(str(n) for n in f['notices_heard'])} times for "
                     f"{f['timers_per_run']:,} warnings per run")
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def record(results: dict[str, Any], table: str, path: Path, date_text: str) -> None:
    """Add a dated section with the command and the table at the top of ``RESULTS.md``
    (under its header, newest first); the rest of the file is kept as it was."""
    meta = results["meta"]
    section = "\n".join([
        f"## {meta['date'][:10]}, commit {meta['commit']}: PostgreSQL (`python -m bench.pg`)",
        "",
        f"* Date (`date`): `{date_text}`",
        f"* Machine: {meta['cpus']} CPUs, PostgreSQL {meta['postgresql']} on 127.0.0.1, "
        f"Python {meta['python']}; 1-minute load average {meta['load_1min'][0]:.1f} at the "
        f"start, {meta['load_1min'][1]:.1f} at the end (other work on the machine makes "
        f"the figures noisier)",
        f"* Command: `{meta['command']}`; {meta['seconds']:.0f} s wall time",
        "",
        "```",
        table,
        "```",
        "",
        "",
    ])
    text = path.read_text(encoding="utf-8") if path.exists() else "# Recorded benchmark runs\n\n"
    at = text.find("\n## ")
    new = text.rstrip("\n") + "\n\n" + section if at < 0 else text[:at + 1] + section + text[at + 1:]
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


# -- the command line ------------------------------------------------------------------------------


def _counts(text: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("give counts separated by commas, e.g. 1,2,4") from None
    if not parts or min(parts) < 1:
        raise argparse.ArgumentTypeError("counts must be at least 1")
    return parts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pg",
                                description="casework on PostgreSQL: durable fire/s beside the "
                                            "raw psycopg floor, and scheduler timers/s")
    p.add_argument("--admin-url", default=DEFAULT_ADMIN,
                   help="a database on the server to create the throwaway database from "
                        f"(default {DEFAULT_ADMIN}; env CASEWORK_PG_ADMIN_URL)")
    p.add_argument("--procs", type=_counts, default=(1, 2, 4), help="process counts (1,2,4)")
    p.add_argument("--cases", type=at_least(1), default=100, help="petitions per process per run (100)")
    p.add_argument("--timers", type=at_least(1), default=3000, help="due timers per scheduler run (3000)")
    p.add_argument("--schedulers", type=_counts, default=(1, 3),
                   help="scheduler process counts (1,3)")
    p.add_argument("--batch-size", type=at_least(1), default=100, help="run_due batch size (100)")
    p.add_argument("--repeat", type=at_least(1), default=3, help="runs per figure (3)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results ({DEFAULT_OUT})")
    p.add_argument("--results-md", type=Path, default=DEFAULT_RESULTS_MD,
                   help=f"where the dated section goes ({DEFAULT_RESULTS_MD})")
    p.add_argument("--no-record", action="store_true", help="do not add a section to RESULTS.md")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _command_line(argv: Sequence[str]) -> str:
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(ROOT))
    except ValueError:
        shown = str(exe)
    return shlex.join([shown, "-m", "bench.pg", *argv])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON and the RESULTS.md section;
    0 unless ``--check`` and a target is missed."""
    args = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(args)
    cfg = Config(admin_url=a.admin_url, procs=a.procs, cases=a.cases, timers=a.timers,
                 timer_cases=min(100, a.timers), schedulers=a.schedulers,
                 batch_size=a.batch_size, repeat=a.repeat, command=_command_line(args))

    results = run_bench(cfg, progress_printer(a.quiet))
    table = format_table(results)
    print(table)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {a.out}")
    if not a.no_record:
        date_text = subprocess.run(["date"], capture_output=True, text=True,
                                   check=False).stdout.strip()
        record(results, table, a.results_md, date_text)
        print(f"section added to {a.results_md}")
    missed = [t["name"] for t in results["targets"] if not t["pass"]]
    return 1 if a.check and missed else 0


__all__ = ["Config", "format_table", "main", "run_bench"]

if __name__ == "__main__":
    raise SystemExit(main())
