"""What every suite uses: summaries of repeated runs, the run's context, the one table format."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Progress = Callable[[str], None]


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


def spread(values: Sequence[float]) -> dict[str, Any]:
    """``Spread.of(values)`` as the JSON keeps it."""
    return Spread.of(values).as_dict()


def ratios(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """The spread of the per-repeat ratios ``a / b`` (runs of the same invocation)."""
    return spread([x / y for x, y in zip(a, b, strict=True)])


def rotated(kinds: Sequence[T], by: int) -> list[T]:
    """The order of the runs in repeat ``by``: each kind once, the first one rotating, so that
    no kind always goes first (two kinds alternate)."""
    k = by % len(kinds)
    return [*kinds[k:], *kinds[:k]]


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


def num(v: float, *, fine: bool = False) -> str:
    """A figure for a table: thousands separated, fewer decimals the larger it is
    (``fine``: three decimals below 1); a count as it is."""
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if fine and abs(v) < 1:
        return f"{v:.3f}"
    return f"{v:.2f}"


@contextmanager
def patched(owner: Any, **fns: Callable[..., Any]) -> Iterator[None]:
    """``owner``'s functions replaced by ``fns`` for the block, then put back: how a suite
    times a part of the engine's work without changing what it does."""
    originals = {name: getattr(owner, name) for name in fns}
    for name, fn in fns.items():
        setattr(owner, name, fn)
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(owner, name, fn)


def timed(fn: Callable[..., T], spent: dict[str, float], key: str) -> Callable[..., T]:
    """``fn``, adding the seconds each call takes to ``spent[key]``."""
    def timed_fn(*args: Any, **kwargs: Any) -> T:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - t
    return timed_fn


def progress_printer(quiet: bool) -> Progress:
    """Where progress lines go: stderr, or nowhere with ``-q``."""
    def progress(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)
    return progress


def target(name: str, value: float, wanted: str, ok: bool) -> dict[str, Any]:
    """One target judged on a median: what ``--check`` looks at."""
    return {"name": name, "value": value, "target": wanted, "pass": bool(ok)}


@dataclass
class Ctx:
    """One suite's run: the command line, its own scratch folder, where progress goes."""

    args: argparse.Namespace
    work: Path
    progress: Progress

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    def pick(self, given: T | None, default: T, quick: T | None = None) -> T:
        """An option's value: as given, else the suite's quick or full default."""
        if given is not None:
            return given
        return quick if self.quick and quick is not None else default

    def repeat(self, default: int, quick: int | None = None) -> int:
        return self.pick(self.args.repeat, default, quick)

    def cases(self, default: int, quick: int) -> int:
        return self.pick(self.args.cases, default, quick)


# -- the one table format -----------------------------------------------------------------------

#: label, value (a spread as ``as_dict`` keeps it, a single number, or None for a heading),
#: unit, the name of the target the row is judged by.
Row = tuple[str, dict[str, Any] | float | None, str, str]


@dataclass
class Table:
    """What a suite prints: lines saying what was run, the figures, notes under them."""

    about: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fine: bool = False  # three decimals below 1 (timings in ms)

    def add(self, label: str, value: dict[str, Any] | float | None = None, unit: str = "",
            target: str = "") -> None:
        self.rows.append((label, value, unit, target))


def format_table(t: Table, targets: Sequence[dict[str, Any]]) -> str:
    """Figure, median, min - max, IQR, target and verdict; a row without a value is a heading.
    The first column is aligned left, the figures right."""
    judged = {x["name"]: x for x in targets}

    def n(v: float) -> str:
        return num(v, fine=t.fine)

    cells: list[tuple[str, ...]] = []
    for label, v, unit, tname in t.rows:
        if v is None:
            cells.append((label,))
            continue
        x = judged.get(tname)
        verdict = f"{x['target']:<18} {'PASS' if x['pass'] else 'MISS'}" if x else ""
        if isinstance(v, dict):
            cells.append((label, f"{n(v['median'])} {unit}".rstrip(), f"{n(v['min'])} - {n(v['max'])}",
                          f"{n(v['q1'])} - {n(v['q3'])}", verdict))
        else:
            cells.append((label, f"{n(v)} {unit}".rstrip(), "", "", verdict))
    head = ("figure", "median", "min - max", "IQR", "target")
    full = [c for c in cells if len(c) > 1]
    widths = [max(len(r[i]) for r in [*full, head]) for i in range(len(head))]
    lines = [*t.about, ""] if t.about else []
    lines += ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
              "  ".join("-" * w for w in widths)]
    for c in cells:
        if len(c) == 1:
            lines.append(c[0])
        else:
            lines.append("  ".join([c[0].ljust(widths[0]),
                                    *(x.rjust(w) for x, w in zip(c[1:-1], widths[1:-1], strict=True)),
                                    c[-1]]).rstrip())
    if t.notes:
        lines += ["", *t.notes]
    return "\n".join(lines)
