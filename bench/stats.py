"""Summaries of repeated measurements: the median with its spread, and percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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
