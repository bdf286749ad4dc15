"""casework beside its peers: ``python -m bench.peers [--quick] [--repeat N]`` (or ``main(argv)``).

The petition lifecycle (``bench.workload``: 7 or 9 steps a case, one transaction a step) is
driven through each implementation on a fresh SQLite file in WAL mode, at
``synchronous=FULL`` and ``NORMAL``, all in the same run:

* ``casework``: the engine, through ``bench.workload.run_engine``;
* ``floor``: stdlib ``sqlite3`` alone, ``bench.workload.run_floor`` (the database's own speed);
* ``django-fsm-2``: django-fsm-2 with the Django ORM (``django_peer``);
* ``python-statemachine`` and ``transitions``: one machine per case object, persisted by
  hand with SQLAlchemy Core (``statemachine_peer``, ``transitions_peer``);
* ``spiffworkflow``: SpiffWorkflow running ``petition.bpmn``, its JSON serialization
  written after each step (``spiff_peer``).

Each figure is the median of ``--repeat`` runs (default 9 runs of 100 cases) with min-max
and IQR. Within one repeat and level every implementation runs once, in an order that
rotates with the repeat; each ratio casework / peer is the median of the per-repeat
ratios. Short runs and many repeats, because the machine is shared: other processes'
bursts of CPU and fsync work land on whichever run is going at the time. Once per invocation (untimed)
each implementation's database is measured after a few cases: rows stored per case and
bytes per step, to show what each one writes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ..stats import Spread, at_least, git_commit, grid, num, progress_printer, publish
from ..workload import (
    CLERK,
    OPEN_DATA,
    PETITION,
    lifecycle,
    remove_db,
    run_engine,
    run_floor,
    steps_of,
)
from .common import PeerFactory, drive_case, run_peer

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "peers_results.json"
LEVELS = ("FULL", "NORMAL")
CASEWORK = "casework"
FLOOR = "floor"


@dataclass(frozen=True)
class Impl:
    name: str
    label: str
    module: str | None  # bench.peers.<module> with make(db, synchronous); None: built in
    make: str = "make"
    default: bool = True  # in the default run (else only with --only)


IMPLS: tuple[Impl, ...] = (
    Impl(CASEWORK, "casework (engine)", None),
    Impl(FLOOR, "raw sqlite3 floor", None),
    Impl("django-fsm-2", "django-fsm-2 + Django ORM", "django_peer"),
    Impl("django-fsm-2-columns", "django-fsm-2, a column per field", "django_peer",
         make="make_columns", default=False),
    Impl("python-statemachine", "python-statemachine + SA Core", "statemachine_peer"),
    Impl("transitions", "transitions + SA Core", "transitions_peer"),
    Impl("transitions-shared", "transitions, one shared machine", "transitions_peer",
         make="make_shared", default=False),
    Impl("spiffworkflow", "SpiffWorkflow (BPMN) + SA Core", "spiff_peer"),
)
BY_NAME = {i.name: i for i in IMPLS}
PEERS = tuple(i.name for i in IMPLS if i.module is not None)
DEFAULT = tuple(i.name for i in IMPLS if i.default)

# The targets, judged on the medians of the per-repeat ratios at each level.
DJANGO = "django-fsm-2"
DJANGO_TARGET = 2.0  # casework at least twice as fast as django-fsm-2 + Django ORM
PEER_TARGET = 1.0  # and faster than each peer
DJANGO_ELSEWHERE = 3200.0  # steps/s measured elsewhere for django-fsm-2 + Django ORM


@dataclass
class Config:
    cases: int = 100
    repeat: int = 9
    warmup: int = 5
    footprint_cases: int = 20
    only: tuple[str, ...] = DEFAULT
    tmpdir: Path | None = None
    quick: bool = False
    command: str = ""


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def load_factory(impl: Impl) -> PeerFactory | str:
    """The peer's ``make``; or why it cannot run (its package is not installed)."""
    assert impl.module is not None
    try:
        mod = importlib.import_module(f"{__package__}.{impl.module}")
    except ImportError as e:
        return f"not installed ({e.name or e})"
    make: PeerFactory = getattr(mod, impl.make)
    return make


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _run_one(name: str, factory: PeerFactory | None, work: Path, level: str,
             cfg: Config) -> float:
    """Steps (transactions) per second of one timed run."""
    db = work / f"{name}-{level}.db"
    if name == CASEWORK:
        return run_engine(db, level, cfg.cases, cfg.warmup).steps_per_s
    if name == FLOOR:
        return run_floor(db, level, cfg.cases, cfg.warmup).tx_per_s
    assert factory is not None
    return run_peer(name, factory, db, level, cfg.cases, cfg.warmup).steps_per_s


def run_throughput(cfg: Config, work: Path, factories: dict[str, PeerFactory | None],
                   progress: Progress = _quiet) -> dict[str, dict[str, list[float]]]:
    """steps/s per level and implementation, one value per repeat."""
    names = [n for n in cfg.only if n in factories]
    runs: dict[str, dict[str, list[float]]] = {lv: {n: [] for n in names} for lv in LEVELS}
    for rep in range(cfg.repeat):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for level in LEVELS:
            for name in order:
                v = _run_one(name, factories[name], work, level, cfg)
                runs[level][name].append(v)
                progress(f"run {rep + 1}/{cfg.repeat} {level:<6} {name:<20} {v:8.0f} steps/s")
    return runs


def _level_figures(runs: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = runs.get(CASEWORK)
    floor = runs.get(FLOOR)
    for name, values in runs.items():
        f: dict[str, Any] = {"steps_per_s": Spread.of(values).as_dict()}
        if base is not None and name != CASEWORK:
            f["casework_ratio"] = Spread.of(
                [c / v for c, v in zip(base, values, strict=True)]).as_dict()
        if floor is not None and name != FLOOR:
            f["share_of_floor"] = Spread.of(
                [v / fl for v, fl in zip(values, floor, strict=True)]).as_dict()
        out[name] = f
    return out


# -- what each writes --------------------------------------------------------------------------

def _checkpoint_size(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=10)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return db.stat().st_size
    finally:
        conn.close()


def _table_rows(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        conn.close()


def footprint(name: str, factory: PeerFactory | None, work: Path, n_cases: int) -> dict[str, Any]:
    """Rows stored per case (tables with a row per two cases or more) and bytes per step.

    ``n_cases`` cases first (so the schema and first pages are there), a checkpoint and the
    file size, then ``n_cases`` more and the size again: bytes per step is the growth over
    the steps of the second batch (whole pages, indexes included). At ``NORMAL``.
    """
    db = work / f"footprint-{name}.db"
    remove_db(db)
    first = range(n_cases)
    second = range(n_cases, 2 * n_cases)
    if name == CASEWORK:
        from casework import Engine

        eng = Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL")

        def one(i: int) -> None:
            cid = eng.open_case("petition", OPEN_DATA, actor=CLERK).id
            for trigger, actor, data in lifecycle(i):
                eng.fire(cid, trigger, actor=actor, data=data)

        close: Callable[[], None] = eng.close
    else:
        assert factory is not None
        peer = factory(db, "NORMAL")

        def one(i: int) -> None:
            drive_case(peer, i)

        close = peer.close
    try:
        for i in first:
            one(i)
        size1 = _checkpoint_size(db)
        for i in second:
            one(i)
        size2 = _checkpoint_size(db)
    finally:
        close()
    rows = _table_rows(db)
    remove_db(db)
    cases = 2 * n_cases
    steps = sum(steps_of(i) for i in second)
    return {"cases": cases,
            "rows_per_case": {t: n / cases for t, n in rows.items() if n >= cases / 2},
            "bytes_per_step": (size2 - size1) / steps}


# -- the run -----------------------------------------------------------------------------------

def evaluate_targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for level in LEVELS:
        f = figures.get(f"sqlite_{level.lower()}", {})
        if CASEWORK not in f:
            continue
        for peer in PEERS:
            if peer not in f or not BY_NAME[peer].default:
                continue
            r = f[peer]["casework_ratio"]
            want = DJANGO_TARGET if peer == DJANGO else PEER_TARGET
            ok = r["median"] >= want if peer == DJANGO else r["median"] > want
            out.append({"name": f"{level} casework / {peer}", "value": r["median"],
                        "min": r["min"], "max": r["max"],
                        "target": f">= {want:g}" if peer == DJANGO else f"> {want:g}",
                        "pass": ok})
    return out


def run_peers(cfg: Config, progress: Progress = _quiet) -> dict[str, Any]:
    """Run every figure and return the results (what ``peers_results.json`` holds)."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    factories: dict[str, PeerFactory | None] = {}
    skipped: dict[str, str] = {}
    for name in cfg.only:
        impl = BY_NAME[name]
        if impl.module is None:
            factories[name] = None
            continue
        f = load_factory(impl)
        if isinstance(f, str):
            skipped[name] = f
            progress(f"{name}: skipped, {f}")
        else:
            factories[name] = f
    with tempfile.TemporaryDirectory(prefix="casework-peers-", dir=cfg.tmpdir) as tmp:
        work = Path(tmp)
        runs = run_throughput(cfg, work, factories, progress)
        feet: dict[str, Any] = {}
        if cfg.footprint_cases > 0:
            for name, factory in factories.items():
                if name != FLOOR:
                    feet[name] = footprint(name, factory, work, cfg.footprint_cases)
                    progress(f"footprint {name:<20} {feet[name]['bytes_per_step']:8.0f} B/step")
    figures: dict[str, Any] = {f"sqlite_{lv.lower()}": _level_figures(runs[lv]) for lv in LEVELS}
    steps = [steps_of(i) for i in range(cfg.cases)]
    versions = {d: _version(d) for d in ("django", "django-fsm-2", "python-statemachine",
                                         "transitions", "spiffworkflow", "sqlalchemy")}
    return {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "command": cfg.command,
            "seconds": time.perf_counter() - t0,
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "commit": git_commit(),
            "versions": versions,
        },
        "config": {
            "quick": cfg.quick, "cases": cfg.cases, "repeat": cfg.repeat,
            "warmup_cases": cfg.warmup, "steps_per_case": sum(steps) / len(steps),
            "transactions_per_run": sum(steps), "implementations": list(factories),
            "footprint_cases": 2 * cfg.footprint_cases,
        },
        "skipped": skipped,
        "figures": figures,
        "footprint": feet,
        "targets": evaluate_targets(figures),
        "django_elsewhere_steps_per_s": DJANGO_ELSEWHERE,
    }


# -- the table ---------------------------------------------------------------------------------

def _range(s: dict[str, Any]) -> str:
    return f"{num(s['min'])} - {num(s['max'])}"


def format_table(results: dict[str, Any]) -> str:
    meta, cfg, figs = results["meta"], results["config"], results["figures"]
    targets = {t["name"]: t for t in results["targets"]}
    v = meta["versions"]
    lines = [
        f"casework peers, {meta['date']}, commit {meta['commit']}; Python {meta['python']}, "
        f"SQLite {meta['sqlite']}, {meta['cpus']} CPUs",
        ", ".join(f"{label} {v.get(d) or '-'}" for label, d in (
            ("Django", "django"), ("django-fsm-2", "django-fsm-2"),
            ("python-statemachine", "python-statemachine"), ("transitions", "transitions"),
            ("SpiffWorkflow", "spiffworkflow"), ("SQLAlchemy", "sqlalchemy"))),
        f"{cfg['cases']} petition cases x {cfg['steps_per_case']:.2f} steps = "
        f"{cfg['transactions_per_run']} transactions per run, {cfg['repeat']} runs each; "
        f"WAL; one transaction per step; steps/s = transactions per second",
        "",
    ]
    head = ("implementation", "steps/s", "min - max", "IQR", "casework / it", "min - max",
            "target")
    rows: list[tuple[str, ...]] = []
    for level in LEVELS:
        f = figs[f"sqlite_{level.lower()}"]
        rows.append((f"synchronous={level}", "", "", "", "", "", ""))
        for impl in IMPLS:
            if impl.name not in f:
                continue
            s = f[impl.name]["steps_per_s"]
            r = f[impl.name].get("casework_ratio")
            t = targets.get(f"{level} casework / {impl.name}")
            rows.append((
                f"  {impl.label}", num(s["median"]), _range(s),
                f"{num(s['q1'])} - {num(s['q3'])}",
                num(r["median"]) if r else "", _range(r) if r else "",
                f"{t['target']:<5} {'PASS' if t['pass'] else 'MISS'}" if t else ""))
    lines += grid(head, rows)
    first = max(len(r[0]) for r in [*rows, head])  # the first column's width
    feet = results.get("footprint") or {}
    if feet:
        lines.append("")
        lines.append(f"what each stores (untimed, {cfg['footprint_cases']} cases at NORMAL): "
                     "bytes per step (file growth, whole pages) and rows per case by table")
        for impl in IMPLS:
            fp = feet.get(impl.name)
            if fp is None:
                continue
            tables = ", ".join(f"{t} {num(n)}" for t, n in fp["rows_per_case"].items())
            lines.append(f"  {impl.label:<{first - 2}}  {num(fp['bytes_per_step']):>7} B/step"
                         f"   {tables}")
    for name, why in results.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


# -- the command line --------------------------------------------------------------------------

def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="casework beside django-fsm-2, python-statemachine, transitions and "
                    "SpiffWorkflow on the petition lifecycle (SQLite, FULL and NORMAL)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20 cases, 3 runs, a smaller footprint (under a minute)")
    p.add_argument("--repeat", type=at_least(1), default=None, help="runs per figure (default 9, quick 3)")
    p.add_argument("--cases", type=at_least(1), default=None,
                   help="petition cases per run (default 100, quick 20)")
    p.add_argument("--only", type=_names, default=None, metavar="NAME[,NAME]",
                   help=f"implementations to run (default {', '.join(DEFAULT)}; "
                        f"also: {', '.join(n for n in BY_NAME if n not in DEFAULT)})")
    p.add_argument("--footprint-cases", type=at_least(0), default=None, metavar="N",
                   help="cases in each half of the untimed measurement of what each stores "
                        "(default 20, quick 5; 0 skips it)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"where to write the JSON results (default {DEFAULT_OUT})")
    p.add_argument("--tmpdir", type=Path, default=None,
                   help="where the database files go (the disk decides the fsync cost)")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--profile", metavar="NAME", choices=[*BY_NAME], default=None,
                   help="instead: profile one run of one implementation with pyinstrument")
    p.add_argument("--level", choices=LEVELS, default="NORMAL",
                   help="the synchronous level of the --profile run (default NORMAL)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _config(a: argparse.Namespace, argv: Sequence[str]) -> Config:
    repeat = a.repeat if a.repeat is not None else (3 if a.quick else 9)
    cases = a.cases if a.cases is not None else (20 if a.quick else 100)
    only = a.only or DEFAULT
    return Config(cases=cases, repeat=repeat, only=only, tmpdir=a.tmpdir, quick=a.quick,
                  footprint_cases=(a.footprint_cases if a.footprint_cases is not None
                                   else (5 if a.quick else 20)),
                  command=shlex.join(["python", "-m", "bench.peers", *argv]))


def profile(name: str, cfg: Config, level: str = "NORMAL") -> str:
    """One run of ``name`` under pyinstrument, as text (at NORMAL no fsync is in the way)."""
    from pyinstrument import Profiler

    impl = BY_NAME[name]
    factory: PeerFactory | None = None
    if impl.module is not None:
        f = load_factory(impl)
        if isinstance(f, str):
            return f"{name}: {f}"
        factory = f
    profiler = Profiler(interval=0.0002)
    with tempfile.TemporaryDirectory(prefix="casework-peers-", dir=cfg.tmpdir) as tmp:
        db = Path(tmp) / "profile.db"
        if name == CASEWORK:
            rate = run_engine(db, level, cfg.cases, cfg.warmup,
                              around=lambda: profiler).steps_per_s
        elif name == FLOOR:
            return "the floor is stdlib sqlite3 alone; profile an implementation"
        else:
            assert factory is not None
            rate = run_peer(name, factory, db, level, cfg.cases, cfg.warmup,
                            around=lambda: profiler).steps_per_s
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    return f"{name} at {level}: {rate:.0f} steps/s under the profiler\n{text}"


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON; 0 unless ``--check`` and a target is missed."""
    args = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(args)
    cfg = _config(a, args)
    if a.profile:
        print(profile(a.profile, cfg, a.level))
        return 0

    results = run_peers(cfg, progress_printer(a.quiet))
    return publish(results, format_table(results), a.out, a.check)


__all__ = ["Config", "format_table", "main", "run_peers"]
