"""The casework benchmarks: ``python -m bench [SUITE ...] [options]`` (or ``main(argv)``).

Each suite is a module with ``run(ctx) -> dict`` (its figures, its config, its ``targets``)
and ``table(result) -> Table``; this module parses the one command line, runs the suites
named (by default those of :data:`DEFAULT`), prints one table per suite and writes one
results file: a metadata block and one key per suite. Every figure is the median of
``--repeat`` runs with min/max and IQR; every ratio is taken between runs of the same
invocation. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .base import Ctx, at_least, format_table, progress_printer
from .db import DEFAULT_ADMIN, ROOT
from .peers.runner import BY_NAME, names
from .peers.runner import DEFAULT as DEFAULT_PEERS

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results.json"
DEFAULT_RECORD = HERE / "RESULTS.md"

#: suite -> (module under bench, what it measures)
SUITES: dict[str, tuple[str, str]] = {
    "core": ("core", "engine steps/s at FULL and NORMAL beside the raw sqlite3 floor; fire p50/p99"),
    "memory": ("memory", "peak RSS of a fresh engine on a small and a large pre-filled database"),
    "bulk": ("bulk", "Engine.import_cases of a unit's ledger beside a raw sqlite3 load"),
    "cold": ("cold", "cold start of run.py validate beside a bare python"),
    "peers": ("peers.runner", "the same lifecycle through django-fsm-2, python-statemachine, "
                              "transitions, SpiffWorkflow (those installed)"),
    "pg": ("pg", "PostgreSQL: fire/s from 1, 2, 4 processes beside raw psycopg; timers/s"),
    "pages": ("pages", "WAL pages each step writes, by table and index"),
    "timers": ("timers", "finding and firing due timers among many pending ones (SQLite)"),
    "reports": ("reports", "reports and verify over a large history, SQLite and PostgreSQL"),
    "http": ("http_api", "the HTTP API: requests/s, p50/p99 at 1, 4, 16 clients beside the "
                         "Python API in-process, SQLite and PostgreSQL"),
    "search": ("search", "first pages of search and worklists over 100,000 and 1,000,000 cases "
                         "beside hand-written SQL, SQLite and PostgreSQL"),
    "console": ("console", "the console's worklist, case and report pages in headless Chromium "
                           "over 100,000 stored cases: time to first byte and full page load"),
    "threads": ("threads", "1-16 threads on one Engine (SQLite FULL, NORMAL) beside the raw "
                           "floor; PostgreSQL 8 threads and 4 processes beside psycopg"),
}
DEFAULT = ("core", "memory", "bulk", "cold", "peers", "pg")


def _list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _counts(text: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(p.replace("_", "")) for p in _list(text))
    except ValueError:
        raise argparse.ArgumentTypeError("give counts separated by commas, e.g. 1,2,4") from None
    if not parts or min(parts) < 1:
        raise argparse.ArgumentTypeError("counts must be at least 1")
    return parts


def _sizes(text: str) -> tuple[int, int]:
    parts = _counts(text)
    if len(parts) != 2:
        raise argparse.ArgumentTypeError("give two case counts, e.g. 10000,100000")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The casework benchmarks (see bench/README.md).",
        epilog="suites:\n" + "\n".join(f"  {n:<8} {about}" for n, (_, about) in SUITES.items())
        + f"\n  all      every suite\nwithout SUITE: {' '.join(DEFAULT)}")
    p.add_argument("suites", nargs="*", metavar="SUITE", help="the suites to run (see below)")
    p.add_argument("--skip", type=_list, default=(), metavar="SUITE[,SUITE]",
                   help="leave these out")
    p.add_argument("--quick", action="store_true", help="smoke run: every suite at a small size")
    p.add_argument("--repeat", type=at_least(1), default=None,
                   help="runs per figure (default: each suite's own: core, memory, cold 5; "
                        "bulk 3 at most; peers 9, quick 3; pg, threads 3, quick 1; timers, reports 3)")
    p.add_argument("--cases", type=at_least(1), default=None,
                   help="cases per run (default: core 300, quick 30; peers 100, quick 20; pg 100 "
                        "per process, quick 20; pages 200 counted, quick 20; reports 100,000, "
                        "quick 10,000; http 480 requests per run, quick 64; threads 240 "
                        "(PostgreSQL 96), quick 32 (16))")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"where the JSON results go (default {DEFAULT_OUT})")
    p.add_argument("--record", type=Path, nargs="?", const=DEFAULT_RECORD, default=None,
                   metavar="PATH", help=f"also add a dated section with the tables at the top of "
                                        f"PATH (default {DEFAULT_RECORD})")
    p.add_argument("--tmpdir", type=Path, default=None,
                   help="where the database files go (the disk decides what an fsync costs)")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--profile", nargs="?", const="casework", choices=[*BY_NAME], default=None,
                   metavar="NAME", help="instead: one run of NAME (default casework) under "
                                        "pyinstrument, at --level")
    p.add_argument("--level", choices=("FULL", "NORMAL"), default="NORMAL",
                   help="the synchronous level of the --profile run (default NORMAL)")
    g = p.add_argument_group("memory")
    g.add_argument("--mem-sizes", type=_sizes, default=None, metavar="SMALL,LARGE",
                   help="stored cases (default 10000,100000; quick 1000,5000)")
    g.add_argument("--mem-picked", type=at_least(1), default=200,
                   help="random cases each probe fires two commands on (default 200)")
    g = p.add_argument_group("bulk")
    g.add_argument("--bulk", type=at_least(1), default=None, metavar="N",
                   help="cases in the imported ledger (default 100000, quick 2000)")
    g = p.add_argument_group("peers")
    g.add_argument("--only", type=names, default=None, metavar="NAME[,NAME]",
                   help=f"implementations (default {', '.join(DEFAULT_PEERS)}; also: "
                        f"{', '.join(n for n in BY_NAME if n not in DEFAULT_PEERS)})")
    g.add_argument("--footprint-cases", type=at_least(0), default=None, metavar="N",
                   help="cases in each half of the untimed measurement of what each stores "
                        "(default 20, quick 5; 0 skips it)")
    g = p.add_argument_group("pg, reports and search")
    g.add_argument("--admin-url", default=DEFAULT_ADMIN,
                   help="a PostgreSQL database to create the throwaway database from "
                        f"(default {DEFAULT_ADMIN}; env CASEWORK_PG_ADMIN_URL)")
    g.add_argument("--procs", type=_counts, default=None, help="pg: process counts (1,2,4; quick 1,2)")
    g.add_argument("--timers", type=at_least(1), default=None,
                   help="pg: due timers per scheduler run (3000, quick 300)")
    g.add_argument("--schedulers", type=_counts, default=(1, 3), help="pg: scheduler processes (1,3)")
    g.add_argument("--batch-size", type=at_least(1), default=100, help="pg: run_due batch size (100)")
    g.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both",
                   help="reports and search: where (default both)")
    g = p.add_argument_group("search")
    g.add_argument("--search-sizes", type=_sizes, default=None, metavar="SMALL,LARGE",
                   help="stored cases of the two measurements (default 100000,1000000; quick "
                        "10000,100000)")
    g.add_argument("--calls", type=at_least(1), default=None,
                   help="calls of each question per run (default 100, quick 40)")
    g = p.add_argument_group("threads")
    g.add_argument("--thread-counts", type=_counts, default=None, metavar="N[,N]",
                   help="threads sharing one Engine on SQLite (default 1,4,8,16)")
    g.add_argument("--no-pg-threads", action="store_true",
                   help="leave out the PostgreSQL part of the threads suite")
    g = p.add_argument_group("timers and pages")
    g.add_argument("--levels", default="FULL,NORMAL",
                   help="timers: SQLite synchronous levels of the firing runs (FULL,NORMAL)")
    g.add_argument("--warm", type=at_least(0), default=None,
                   help="pages: cases run first, not counted (300, quick 30)")
    return p


def git_commit() -> str | None:
    """The commit measured, with ``+dirty`` when the engine's files have local changes."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "engine",
                                "persistence", "workflows"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _chosen(p: argparse.ArgumentParser, a: argparse.Namespace) -> list[str]:
    asked = list(SUITES) if "all" in a.suites else (a.suites or list(DEFAULT))
    unknown = [s for s in [*asked, *a.skip] if s not in SUITES]
    if unknown:
        p.error(f"unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)} or all")
    return [s for s in dict.fromkeys(asked) if s not in a.skip]


def run_suites(chosen: list[str], a: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run the suites in order; the results (what the JSON file holds)."""
    started, t0, load = datetime.now(UTC), time.perf_counter(), os.getloadavg()[0]
    progress = progress_printer(a.quiet)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="casework-bench-", dir=a.tmpdir) as tmp:
        for name in chosen:
            work = Path(tmp) / name
            work.mkdir()
            progress(f"-- {name}")
            t = time.perf_counter()
            mod = importlib.import_module(f"{__package__}.{SUITES[name][0]}")
            results[name] = {**mod.run(Ctx(a, work, progress)), "wall_s": time.perf_counter() - t}
            shutil.rmtree(work, ignore_errors=True)  # a suite's files go as soon as it is done
    meta = {"date": started.isoformat(timespec="seconds"), "command": command,
            "seconds": time.perf_counter() - t0, "commit": git_commit(),
            "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                        "platform": platform.platform(), "cpus": os.cpu_count(),
                        "load_1min": [load, os.getloadavg()[0]]},
            "workdir_parent": str(a.tmpdir or tempfile.gettempdir()), "quick": a.quick}
    return {"meta": meta, **results}


def format_results(results: dict[str, Any]) -> str:
    """Every suite's table under one header."""
    meta = results["meta"]
    m = meta["machine"]
    lines = [f"casework bench, {meta['date']}, commit {meta['commit']}; Python {m['python']}, "
             f"SQLite {m['sqlite']}, {m['cpus']} CPUs; 1-minute load {m['load_1min'][0]:.1f} at "
             f"the start, {m['load_1min'][1]:.1f} at the end"]
    for name, res in results.items():
        if name != "meta":
            mod = importlib.import_module(f"{__package__}.{SUITES[name][0]}")
            lines += ["", f"== {name}: {SUITES[name][1]}",
                      format_table(mod.table(res), res["targets"])]
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def record(results: dict[str, Any], text: str, path: Path) -> None:
    """Add a dated section with the command and the tables at the top of ``path`` (under its
    header, newest first); the rest of the file is kept as it was."""
    meta = results["meta"]
    date_text = subprocess.run(["date"], capture_output=True, text=True, check=False).stdout.strip()
    suites = ", ".join(k for k in results if k != "meta")
    section = "\n".join([
        f"## {meta['date'][:10]}, commit {meta['commit']}: {suites} (`{meta['command']}`)", "",
        f"* Date (`date`): `{date_text}`",
        f"* Machine: {meta['machine']['cpus']} CPUs, {meta['machine']['platform']}; "
        f"{meta['seconds']:.0f} s wall time", "", "```", text, "```", "", ""])
    old = path.read_text(encoding="utf-8") if path.exists() else "# Recorded benchmark runs\n\n"
    at = old.find("\n## ")
    new = old.rstrip("\n") + "\n\n" + section if at < 0 else old[:at + 1] + section + old[at + 1:]
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run, print the tables, write the JSON (and the RESULTS.md section with ``--record``);
    1 if a suite found a wrong result, or with ``--check`` a target was missed; else 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    a = parser.parse_args(args)
    chosen = _chosen(parser, a)
    if a.profile:
        from .peers.runner import profile

        with tempfile.TemporaryDirectory(prefix="casework-bench-", dir=a.tmpdir) as tmp:
            print(profile(a.profile, Ctx(a, Path(tmp), progress_printer(a.quiet)), a.level))
        return 0
    results = run_suites(chosen, a, shlex.join(["python", "-m", "bench", *args]))
    text = format_results(results)
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results written to {a.out}")
    if a.record is not None:
        record(results, text, a.record)
        print(f"section added to {a.record}")
    suites = [r for k, r in results.items() if k != "meta"]
    wrong = any(r.get("problems") for r in suites)
    missed = any(not t["pass"] for r in suites for t in r["targets"])
    return 1 if wrong or (a.check and missed) else 0


__all__ = ["DEFAULT", "SUITES", "main", "run_suites"]
