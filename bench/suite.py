"""The casework benchmark suite: ``python -m bench`` (or ``main(argv)``).

Figures, all measured in one run (see ``bench/README.md``):

* engine steps/s on a SQLite file in WAL mode at ``synchronous=FULL`` and ``NORMAL``
  (the petition lifecycle, one transaction per step);
* the raw stdlib ``sqlite3`` floor for the same transactions, and the ratio engine/floor;
* p50 and p99 latency of one ``fire``, from the same runs;
* peak RSS of a fresh engine process on databases of two sizes (10,000 and 100,000 cases);
* seconds to import a unit's ledger of 100,000 cases in bulk, beside a raw ``sqlite3`` load
  of the same rows;
* cold start of ``python run.py validate`` on the petition workflow, beside a bare interpreter;
* the peers (:mod:`bench.peers`: django-fsm-2, python-statemachine, transitions,
  SpiffWorkflow, those installed) and PostgreSQL from 1, 2 and 4 processes beside the raw
  psycopg floor (:mod:`bench.pg`), each printed as its own table.

Every figure is the median of ``--repeat`` runs with min/max and IQR; every ratio is
taken between runs of the same invocation (engine and floor runs alternate).
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

from .bulk import VALIDATE, cold_start, make_ledger, run_import, run_import_floor, system_python
from .memory import prefill, run_probe
from .stats import (
    Spread,
    at_least,
    git_commit,
    grid,
    num,
    percentile,
    progress_printer,
    publish,
)
from .workload import EngineRun, FloorRun, run_engine, run_floor, steps_of

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
LEVELS = ("FULL", "NORMAL")
MB = 1024.0  # KiB per MiB

# Targets, judged on the medians.
RATIO_TARGET = {"FULL": 0.5, "NORMAL": 0.2}
P99_TARGET_MS = 5.0
MEMORY_TARGET_FRACTION = 0.10
MEMORY_TARGET_MB = 3.0


@dataclass
class Config:
    cases: int = 300
    repeat: int = 5
    mem_sizes: tuple[int, int] = (10_000, 100_000)
    mem_picked: int = 200
    warmup: int = 5
    memory: bool = True
    bulk: int = 100_000  # cases in the imported ledger; 0: no bulk figure
    bulk_repeat: int = 3  # each run imports the whole ledger, so fewer runs than the rest
    cold: bool = True
    peers: bool = True
    pg: bool = True
    tmpdir: Path | None = None
    quick: bool = False
    command: str = ""


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _level_figures(engine_runs: list[EngineRun], floor_runs: list[FloorRun]) -> dict[str, Any]:
    ratios = [e.steps_per_s / f.tx_per_s for e, f in zip(engine_runs, floor_runs, strict=True)]
    ms = 1000.0
    return {
        "engine_steps_per_s": Spread.of([r.steps_per_s for r in engine_runs]).as_dict(),
        "floor_tx_per_s": Spread.of([r.tx_per_s for r in floor_runs]).as_dict(),
        "ratio": Spread.of(ratios).as_dict(),
        "fire_p50_ms": Spread.of([percentile(r.fire_latencies, 50) * ms
                                  for r in engine_runs]).as_dict(),
        "fire_p99_ms": Spread.of([percentile(r.fire_latencies, 99) * ms
                                  for r in engine_runs]).as_dict(),
        "open_p50_ms": Spread.of([percentile(r.open_latencies, 50) * ms
                                  for r in engine_runs]).as_dict(),
        "transactions_per_run": engine_runs[0].steps,
        "fires_per_run": len(engine_runs[0].fire_latencies),
    }


def run_throughput(cfg: Config, work: Path, progress: Progress = _quiet) -> dict[str, Any]:
    """Engine and floor runs at each synchronous level, alternating which goes first."""
    engine_runs: dict[str, list[EngineRun]] = {lv: [] for lv in LEVELS}
    floor_runs: dict[str, list[FloorRun]] = {lv: [] for lv in LEVELS}
    for rep in range(cfg.repeat):
        for level in LEVELS:
            order = ("engine", "floor") if rep % 2 == 0 else ("floor", "engine")
            for which in order:
                if which == "engine":
                    e = run_engine(work / f"engine-{level}.db", level, cfg.cases, cfg.warmup)
                    engine_runs[level].append(e)
                    progress(f"run {rep + 1}/{cfg.repeat} {level:<6} engine {e.steps_per_s:8.0f} "
                             f"steps/s  p99 {percentile(e.fire_latencies, 99) * 1000:.2f} ms")
                else:
                    f = run_floor(work / f"floor-{level}.db", level, cfg.cases, cfg.warmup)
                    floor_runs[level].append(f)
                    progress(f"run {rep + 1}/{cfg.repeat} {level:<6} floor  {f.tx_per_s:8.0f} tx/s")
    return {f"sqlite_{lv.lower()}": _level_figures(engine_runs[lv], floor_runs[lv])
            for lv in LEVELS}


def run_memory(cfg: Config, work: Path, progress: Progress = _quiet) -> dict[str, Any]:
    """Peak RSS of fresh engine processes on pre-filled databases of two sizes."""
    small, large = cfg.mem_sizes
    dbs = {}
    prefill_s = {}
    for n in (small, large):
        dbs[n] = work / f"memory-{n}.db"
        prefill_s[n] = prefill(dbs[n], n)
        progress(f"pre-filled {n:,} cases in {prefill_s[n]:.1f} s")
    probes: dict[int, list[dict[str, Any]]] = {small: [], large: []}
    for rep in range(cfg.repeat):
        for n in ((small, large) if rep % 2 == 0 else (large, small)):
            r = run_probe(dbs[n], cfg.mem_picked, slot=rep, slots=cfg.repeat)
            if r["stored_cases"] != n or not r["chain_ok"]:
                raise RuntimeError(f"memory probe on {n} cases went wrong: {r}")
            probes[n].append(r)
            progress(f"run {rep + 1}/{cfg.repeat} memory {n:>7,} cases: peak RSS "
                     f"{r['peak_rss_kb'] / MB:.1f} MB after {r['fired']} commands")
    for p in dbs.values():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)

    def peak(n: int) -> list[float]:
        return [r["peak_rss_kb"] / MB for r in probes[n]]

    def growth(n: int) -> list[float]:
        return [(r["rss_end_kb"] - r["rss_start_kb"]) / MB for r in probes[n]]

    ratios = [b / a for a, b in zip(peak(small), peak(large), strict=True)]
    diffs = [b - a for a, b in zip(peak(small), peak(large), strict=True)]
    return {
        "sizes": [small, large],
        "commands_per_probe": probes[small][0]["fired"],
        "small": {"cases": small, "peak_rss_mb": Spread.of(peak(small)).as_dict(),
                  "growth_mb": Spread.of(growth(small)).as_dict(), "prefill_s": prefill_s[small]},
        "large": {"cases": large, "peak_rss_mb": Spread.of(peak(large)).as_dict(),
                  "growth_mb": Spread.of(growth(large)).as_dict(), "prefill_s": prefill_s[large]},
        "ratio": Spread.of(ratios).as_dict(),
        "diff_mb": Spread.of(diffs).as_dict(),
        "probes": {str(n): probes[n] for n in (small, large)},
    }


def run_bulk(cfg: Config, work: Path, progress: Progress = _quiet) -> dict[str, Any]:
    """Import a ledger of ``cfg.bulk`` cases through the engine and load it raw, alternating."""
    ledger = work / "ledger.jsonl"
    t0 = time.perf_counter()
    size = make_ledger(ledger, cfg.bulk, work / "template.db")
    progress(f"wrote a ledger of {cfg.bulk:,} cases ({size / 1e6:.0f} MB) in "
             f"{time.perf_counter() - t0:.1f} s")
    engine_s: list[float] = []
    floor_s: list[float] = []
    for rep in range(cfg.bulk_repeat):
        for which in (("engine", "floor") if rep % 2 == 0 else ("floor", "engine")):
            if which == "engine":
                sec, n = run_import(work / "import.db", ledger, "FULL")
                engine_s.append(sec)
            else:
                sec, n = run_import_floor(work / "import-floor.db", ledger, "FULL")
                floor_s.append(sec)
            if n != cfg.bulk:
                raise RuntimeError(f"{which} import wrote {n} cases of {cfg.bulk}")
            progress(f"run {rep + 1}/{cfg.bulk_repeat} bulk   {which:<6} {sec:8.1f} s")
    ledger.unlink()
    return {
        "cases": cfg.bulk, "ledger_mb": size / 1e6, "synchronous": "FULL",
        "engine_s": Spread.of(engine_s).as_dict(),
        "engine_cases_per_s": Spread.of([cfg.bulk / s for s in engine_s]).as_dict(),
        "floor_s": Spread.of(floor_s).as_dict(),
        "ratio": Spread.of([f / e for e, f in zip(engine_s, floor_s, strict=True)]).as_dict(),
    }


def run_cold(cfg: Config, progress: Progress = _quiet) -> dict[str, Any]:
    """Fresh processes: ``python run.py validate`` on the petition workflow, and a bare
    interpreter, alternating."""
    python = system_python()
    validate: list[float] = []
    bare: list[float] = []
    for rep in range(cfg.repeat):
        validate.append(cold_start([python, *VALIDATE]))
        bare.append(cold_start([python, "-c", "pass"]))
        progress(f"run {rep + 1}/{cfg.repeat} cold start validate {validate[-1]:.2f} s, "
                 f"bare python {bare[-1]:.2f} s")
    return {"command": " ".join(["python", *VALIDATE]), "python": python,
            "validate_s": Spread.of(validate).as_dict(), "bare_python_s": Spread.of(bare).as_dict()}


def run_peer_figures(cfg: Config, progress: Progress = _quiet) -> dict[str, Any]:
    """The same lifecycle through each installed peer (``bench.peers``' own defaults)."""
    from .peers.runner import Config as PeersConfig
    from .peers.runner import run_peers

    peers_cfg = (PeersConfig(cases=20, repeat=3, footprint_cases=10, quick=True, tmpdir=cfg.tmpdir)
                 if cfg.quick else PeersConfig(tmpdir=cfg.tmpdir))
    return run_peers(peers_cfg, progress)


def run_pg_figures(cfg: Config, progress: Progress = _quiet) -> dict[str, Any]:
    """``bench.pg`` on the local server; ``{"skipped": why}`` when no server answers."""
    import psycopg

    from .pg import Config as PgConfig
    from .pg import run_bench

    pg_cfg = PgConfig()
    try:
        with psycopg.connect(pg_cfg.admin_url, connect_timeout=5):
            pass
    except psycopg.OperationalError as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        progress(f"PostgreSQL: skipped, {why}")
        return {"skipped": why}
    if cfg.quick:
        pg_cfg = PgConfig(procs=(1, 2), cases=20, timers=300, timer_cases=30, repeat=1)
    return run_bench(pg_cfg, progress)


def evaluate_targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS/MISS of each target against the medians."""
    out: list[dict[str, Any]] = []
    for level in LEVELS:
        f = figures[f"sqlite_{level.lower()}"]
        ratio = f["ratio"]["median"]
        out.append({"name": f"{level} engine/floor", "value": ratio,
                    "target": f">= {RATIO_TARGET[level]}", "pass": ratio >= RATIO_TARGET[level]})
        p99 = f["fire_p99_ms"]["median"]
        out.append({"name": f"{level} fire p99 ms", "value": p99,
                    "target": f"< {P99_TARGET_MS}", "pass": p99 < P99_TARGET_MS})
    m = figures.get("memory")
    if m is not None:
        ratio, diff = m["ratio"]["median"], m["diff_mb"]["median"]
        ok = abs(ratio - 1) <= MEMORY_TARGET_FRACTION or abs(diff) <= MEMORY_TARGET_MB
        out.append({"name": f"memory {m['sizes'][1]:,} / {m['sizes'][0]:,} cases", "value": ratio,
                    "target": f"within {MEMORY_TARGET_FRACTION:.0%} or {MEMORY_TARGET_MB:g} MB",
                    "pass": ok})
    return out


def run_suite(cfg: Config, progress: Progress = _quiet) -> dict[str, Any]:
    """Run every figure and return the results (what ``results.json`` holds)."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="casework-bench-", dir=cfg.tmpdir) as tmp:
        work = Path(tmp)
        figures = run_throughput(cfg, work, progress)
        if cfg.memory:
            figures["memory"] = run_memory(cfg, work, progress)
        if cfg.bulk:
            figures["bulk_import"] = run_bulk(cfg, work, progress)
    if cfg.cold:
        figures["cold_start"] = run_cold(cfg, progress)
    targets = evaluate_targets(figures)
    if cfg.peers:
        figures["peers"] = run_peer_figures(cfg, progress)
        targets += [{**t, "name": f"peers: {t['name']}"} for t in figures["peers"]["targets"]]
    if cfg.pg:
        figures["postgresql"] = run_pg_figures(cfg, progress)
        targets += [{**t, "name": f"PostgreSQL: {t['name']}"}
                    for t in figures["postgresql"].get("targets", [])]
    steps = [steps_of(i) for i in range(cfg.cases)]
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
            "workdir_parent": str(cfg.tmpdir or tempfile.gettempdir()),
        },
        "config": {
            "quick": cfg.quick, "cases": cfg.cases, "repeat": cfg.repeat,
            "warmup_cases": cfg.warmup, "steps_per_case": sum(steps) / len(steps),
            "memory_sizes": list(cfg.mem_sizes) if cfg.memory else None,
            "memory_cases_picked": cfg.mem_picked,
            "bulk_cases": cfg.bulk or None, "bulk_repeat": cfg.bulk_repeat,
        },
        "figures": figures,
        "targets": targets,
    }


# -- the table ---------------------------------------------------------------------------------

def format_table(results: dict[str, Any]) -> str:
    """The results as a fixed-width text table (also valid Markdown-ish in a code block)."""
    meta, cfg, figs = results["meta"], results["config"], results["figures"]
    targets = {t["name"]: t for t in results["targets"]}
    rows: list[tuple[str, str, str, str, str]] = []

    def row(label: str, s: dict[str, Any], unit: str, target: str = "") -> None:
        t = targets.get(target)
        rows.append((label, f"{num(s['median'])} {unit}".rstrip(),
                     f"{num(s['min'])} - {num(s['max'])}",
                     f"{num(s['q1'])} - {num(s['q3'])}",
                     f"{t['target']:<18} {'PASS' if t['pass'] else 'MISS'}" if t else ""))

    for level in LEVELS:
        f = figs[f"sqlite_{level.lower()}"]
        row(f"{level}: engine, steps/s", f["engine_steps_per_s"], "")
        row(f"{level}: raw sqlite3 floor, tx/s", f["floor_tx_per_s"], "")
        row(f"{level}: engine / floor", f["ratio"], "", f"{level} engine/floor")
        row(f"{level}: fire p50", f["fire_p50_ms"], "ms")
        row(f"{level}: fire p99", f["fire_p99_ms"], "ms", f"{level} fire p99 ms")
    m = figs.get("memory")
    if m is not None:
        row(f"peak RSS, {m['small']['cases']:,} cases", m["small"]["peak_rss_mb"], "MB")
        row(f"peak RSS, {m['large']['cases']:,} cases", m["large"]["peak_rss_mb"], "MB")
        row("  difference (large - small)", m["diff_mb"], "MB")
        row("  ratio (large / small)", m["ratio"], "",
            f"memory {m['sizes'][1]:,} / {m['sizes'][0]:,} cases")
    b = figs.get("bulk_import")
    if b is not None:
        row(f"bulk import, {b['cases']:,} cases", b["engine_s"], "s")
        row("  cases/s", b["engine_cases_per_s"], "")
        row("  raw sqlite3 load, same rows", b["floor_s"], "s")
        row("  floor / engine", b["ratio"], "")
    c = figs.get("cold_start")
    if c is not None:
        row("cold start, run.py validate", c["validate_s"], "s")
        row("  bare python -c pass", c["bare_python_s"], "s")
    lines = [
        f"casework bench, {meta['date']}, commit {meta['commit']}; Python {meta['python']}, "
        f"SQLite {meta['sqlite']}, {meta['cpus']} CPUs",
        f"{cfg['cases']} petition cases x {cfg['steps_per_case']:.2f} steps "
        f"= {figs['sqlite_full']['transactions_per_run']} transactions per run "
        f"({figs['sqlite_full']['fires_per_run']} fires), {cfg['repeat']} runs each; "
        f"WAL; one transaction per step",
        "",
    ]
    lines += grid(("figure", "median", "min - max", "IQR", "target"), rows)
    if m is not None:
        lines.append("")
        lines.append(f"memory: fresh process, {m['commands_per_probe']} commands on random "
                     f"cases; engine's own growth after import: "
                     f"{num(m['small']['growth_mb']['median'])} MB ({m['small']['cases']:,}) vs "
                     f"{num(m['large']['growth_mb']['median'])} MB ({m['large']['cases']:,})")
    peers = figs.get("peers")
    if peers is not None:
        from .peers.runner import format_table as peers_table

        lines += ["", peers_table(peers)]
    pg = figs.get("postgresql")
    if pg is not None:
        from .pg import format_table as pg_table

        lines += ["", pg_table(pg) if "skipped" not in pg
                  else f"PostgreSQL: skipped ({pg['skipped']})"]
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


# -- the command line --------------------------------------------------------------------------

def _sizes(text: str) -> tuple[int, int]:
    parts = [int(p.replace("_", "")) for p in text.split(",")]
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError("give two case counts, e.g. 10000,100000")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 30 cases, memory at 1,000 and 5,000 cases (seconds)")
    p.add_argument("--repeat", type=at_least(1), default=5, help="runs per figure (default 5)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"where to write the JSON results (default {DEFAULT_OUT})")
    p.add_argument("--cases", type=at_least(1), default=None,
                   help="petition cases per throughput run (default 300, quick 30)")
    p.add_argument("--mem-sizes", type=_sizes, default=None, metavar="SMALL,LARGE",
                   help="stored cases for the memory figure (default 10000,100000; "
                        "quick 1000,5000)")
    p.add_argument("--mem-picked", type=at_least(1), default=200,
                   help="random cases each memory probe fires two commands on (default 200)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory figure")
    p.add_argument("--bulk", type=at_least(0), default=None, metavar="N",
                   help="cases in the bulk-imported ledger (default 100000, quick 2000; 0: skip)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold start figure")
    p.add_argument("--no-peers", action="store_true", help="skip the peers (bench.peers)")
    p.add_argument("--no-pg", action="store_true", help="skip PostgreSQL (bench.pg)")
    p.add_argument("--tmpdir", type=Path, default=None,
                   help="where the database files go (the disk decides the fsync cost)")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--profile", action="store_true",
                   help="instead: profile one engine run at NORMAL with pyinstrument")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _config(a: argparse.Namespace, argv: Sequence[str]) -> Config:
    cases = a.cases if a.cases is not None else (30 if a.quick else 300)
    sizes = a.mem_sizes or ((1_000, 5_000) if a.quick else (10_000, 100_000))
    bulk = a.bulk if a.bulk is not None else (2_000 if a.quick else 100_000)
    return Config(cases=cases, repeat=a.repeat, mem_sizes=sizes, mem_picked=a.mem_picked,
                  memory=not a.no_memory, bulk=bulk, bulk_repeat=min(a.repeat, 3),
                  cold=not a.no_cold, peers=not a.no_peers, pg=not a.no_pg, tmpdir=a.tmpdir, quick=a.quick,
                  command=shlex.join(["python", "-m", "bench", *argv]))


def profile(cfg: Config) -> str:
    """One engine run at NORMAL (no fsync in the way) under pyinstrument, as text."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002)
    with tempfile.TemporaryDirectory(prefix="casework-bench-", dir=cfg.tmpdir) as tmp:
        run = run_engine(Path(tmp) / "profile.db", "NORMAL", cfg.cases, cfg.warmup,
                         around=lambda: profiler)
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    return f"{run.steps} steps, {run.steps_per_s:.0f} steps/s under the profiler\n{text}"


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the table, write the JSON; 0 unless ``--check`` and a MISS."""
    args = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(args)
    cfg = _config(a, args)
    if a.profile:
        print(profile(cfg))
        return 0

    results = run_suite(cfg, progress_printer(a.quiet))
    return publish(results, format_table(results), a.out, a.check)


__all__ = ["Config", "format_table", "main", "run_suite"]
