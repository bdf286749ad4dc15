"""Summaries of repeated measurements: the median with its spread, and percentiles."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Spread:
    """The median of several runs, with min/max and the interquartile range."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values to summarise")
        vs = sorted(float(v) for v in values)
        if len(vs) >= 2:
            q1, _, q3 = statistics.quantiles(vs, n=4, method="inclusive")
        else:
            q1 = q3 = vs[0]
        return cls(statistics.median(vs), vs[0], vs[-1], q1, q3, tuple(float(v) for v in values))

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "q1": self.q1,
                "q3": self.q3, "runs": list(self.runs)}


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile by nearest rank (p99 of 100 values is the 99th smallest)."""
    if not values:
        raise ValueError("no values")
    vs = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(vs)))
    return vs[min(rank, len(vs)) - 1]


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum`` (else a clear error)."""
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value
    return parse


def grid(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A fixed-width table: the header, a rule, the rows. The first column is aligned left,
    the figures right, the last column (a target and its verdict) left; a row whose second
    cell is empty is a heading, printed as it is."""
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(len(head))]
    sep = "  "
    lines = [sep.join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
             sep.join("-" * w for w in widths)]
    for r in rows:
        if not r[1]:
            lines.append(r[0])
            continue
        cells = [r[0].ljust(widths[0]),
                 *(c.rjust(w) for c, w in zip(r[1:-1], widths[1:-1], strict=True)), r[-1]]
        lines.append(sep.join(cells).rstrip())
    return lines


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """Where a benchmark's progress lines go: stderr, or nowhere with ``-q``."""
    def progress(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)
    return progress


def num(v: float, *, fine: bool = False) -> str:
    """A figure for a table: thousands separated, fewer decimals the larger it is
    (``fine``: three decimals below 1)."""
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if fine and abs(v) < 1:
        return f"{v:.3f}"
    return f"{v:.2f}"


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


def publish(results: dict[str, Any], table: str, out: Path, check: bool) -> int:
    """Print the table, write the JSON; 1 if ``check`` and a target was missed."""
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {out}")
    missed = [t["name"] for t in results["targets"] if not t["pass"]]
    return 1 if check and missed else 0
