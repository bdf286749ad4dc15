"""``peers``: casework beside its peers on the petition lifecycle (``bench/README.md``).

Each implementation (:data:`IMPLS`: casework, the raw floor, and the peers whose packages
are installed) drives the same cases on a fresh SQLite file at ``synchronous=FULL`` and
``NORMAL``; within one repeat and level every implementation runs once, in an order that
rotates with the repeat. Once per invocation (untimed) each one's database is measured
after a few cases: rows stored per case and bytes per step.
"""

from __future__ import annotations

import argparse
import importlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from casework import Engine

from tests.petition_steps import open_petition

from ..base import Ctx, Table, ratios, rotated, spread, target
from ..db import PETITION, remove_db
from ..workload import lifecycle, run_engine, run_floor, steps_of
from .common import PeerFactory, drive_case, run_peer

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
    cases: int
    repeat: int
    footprint_cases: int
    only: tuple[str, ...]
    warmup: int = 5


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
        return run_floor(db, level, cfg.cases, cfg.warmup).steps_per_s
    assert factory is not None
    return run_peer(name, factory, db, level, cfg.cases, cfg.warmup).steps_per_s


def run_throughput(cfg: Config, work: Path, factories: dict[str, PeerFactory | None],
                   progress: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    """steps/s per level and implementation, one value per repeat."""
    chosen = [n for n in cfg.only if n in factories]
    runs: dict[str, dict[str, list[float]]] = {lv: {n: [] for n in chosen} for lv in LEVELS}
    for rep in range(cfg.repeat):
        order = rotated(chosen, rep)
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
        f: dict[str, Any] = {"steps_per_s": spread(values)}
        if base is not None and name != CASEWORK:
            f["casework_ratio"] = ratios(base, values)
        if floor is not None and name != FLOOR:
            f["share_of_floor"] = ratios(values, floor)
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
        eng = Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL")

        def one(i: int) -> None:
            cid = open_petition(eng).id
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
            out.append(target(f"{level} casework / {peer}", r["median"],
                              f">= {want:g}" if peer == DJANGO else f"> {want:g}", ok))
    return out


def run(ctx: Ctx) -> dict[str, Any]:
    """Every implementation at each level, and what each stores."""
    cfg = Config(cases=ctx.cases(100, 20), repeat=ctx.repeat(9, 3),
                 footprint_cases=ctx.pick(ctx.args.footprint_cases, 20, 5),
                 only=ctx.args.only or DEFAULT)
    progress = ctx.progress
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
    runs = run_throughput(cfg, ctx.work, factories, progress)
    feet: dict[str, Any] = {}
    if cfg.footprint_cases > 0:
        for name, factory in factories.items():
            if name != FLOOR:
                feet[name] = footprint(name, factory, ctx.work, cfg.footprint_cases)
                progress(f"footprint {name:<20} {feet[name]['bytes_per_step']:8.0f} B/step")
    figures: dict[str, Any] = {f"sqlite_{lv.lower()}": _level_figures(runs[lv]) for lv in LEVELS}
    steps = [steps_of(i) for i in range(cfg.cases)]
    versions = {d: _version(d) for d in ("django", "django-fsm-2", "python-statemachine",
                                         "transitions", "spiffworkflow", "sqlalchemy")}
    return {
        "versions": versions,
        "config": {
            "cases": cfg.cases, "repeat": cfg.repeat,
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

def table(res: dict[str, Any]) -> Table:
    cfg, figs, v = res["config"], res["figures"], res["versions"]
    t = Table([", ".join(f"{label} {v.get(d) or '-'}" for label, d in (
                   ("Django", "django"), ("django-fsm-2", "django-fsm-2"),
                   ("python-statemachine", "python-statemachine"), ("transitions", "transitions"),
                   ("SpiffWorkflow", "spiffworkflow"), ("SQLAlchemy", "sqlalchemy"))),
               f"{cfg['cases']} petition cases x {cfg['steps_per_case']:.2f} steps = "
               f"{cfg['transactions_per_run']} transactions per run, {cfg['repeat']} runs each; "
               f"WAL; one transaction per step; steps/s = transactions per second"])
    for level in LEVELS:
        f = figs[f"sqlite_{level.lower()}"]
        t.add(f"synchronous={level}")
        for impl in IMPLS:
            if impl.name in f:
                t.add(f"  {impl.label}, steps/s", f[impl.name]["steps_per_s"])
                if "casework_ratio" in f[impl.name]:
                    t.add("    casework / it", f[impl.name]["casework_ratio"], "",
                          f"{level} casework / {impl.name}")
    feet = res.get("footprint") or {}
    if feet:
        t.notes.append(f"what each stores (untimed, {cfg['footprint_cases']} cases at NORMAL): "
                       "bytes per step (file growth, whole pages) and rows per case by table")
        width = max(len(i.label) for i in IMPLS)
        for impl in IMPLS:
            if impl.name in feet:
                fp = feet[impl.name]
                tables = ", ".join(f"{name} {n:.2f}" for name, n in fp["rows_per_case"].items())
                t.notes.append(f"  {impl.label:<{width}}  {fp['bytes_per_step']:>7,.0f} B/step   {tables}")
    t.notes += [f"skipped {name}: {why}" for name, why in res.get("skipped", {}).items()]
    return t


def names(text: str) -> tuple[str, ...]:
    """An argparse type: implementations by name, comma-separated."""
    chosen = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in chosen if n not in BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    return chosen


def profile(name: str, ctx: Ctx, level: str = "NORMAL") -> str:
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
    cases = ctx.cases(300, 30) if name == CASEWORK else ctx.cases(100, 20)  # as core, as peers
    db = ctx.work / "profile.db"
    if name == CASEWORK:
        rate = run_engine(db, level, cases, around=lambda: profiler).steps_per_s
    elif name == FLOOR:
        return "the floor is stdlib sqlite3 alone; profile an implementation"
    else:
        assert factory is not None
        rate = run_peer(name, factory, db, level, cases, around=lambda: profiler).steps_per_s
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    return f"{name} at {level}: {rate:.0f} steps/s under the profiler\n{text}"
