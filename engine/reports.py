"""Reports: the figures a workflow declares, computed by SQL over its cases and events.

A workflow's ``report`` section names its figures (counts of cases or events, sums of
an activity's field, ratios), the fields it can be broken down by, and named groups of
a field's values. :func:`build_report` runs one aggregate query per figure (and one
more per breakdown), so a new workflow gets its own report without new code.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from .calendars import WorkdayIndex
from .clock import Clock, from_db, to_db
from .definition import FigureSpec
from .errors import InvalidQuery
from .machine import CompiledWorkflow
from .persistence.reporting import ALL, ReportQueries, Scope
from .registry import Registry
from .storage import Storage

DAY = 86_400.0


@dataclass(frozen=True)
class Report:
    """A report's figures, overall and per group, with its overdue, escalation and
    time-in-state sections."""

    workflow: str
    start: datetime | None
    end: datetime | None
    by: str | None
    where: Mapping[str, tuple[Any, ...]]
    labels: Mapping[str, str]
    totals: Mapping[str, float | None]
    rows: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    overdue: tuple[int, float, float] = (0, 0.0, 0.0)
    escalations: Mapping[str, int] = field(default_factory=dict)
    time_in_state: Mapping[str, tuple[int, float, float]] = field(default_factory=dict)
    ratios: frozenset[str] = frozenset()
    # Cases closed in the period per group: (cases, mean calendar days, mean working days).
    resolution: Mapping[str, tuple[int, float, float]] = field(default_factory=dict)
    reassignments: Mapping[str, int] = field(default_factory=dict)  # per lead unit

    def value(self, figure: str, group: str | None = None) -> float | None:
        return self.totals[figure] if group is None else self.rows[group][figure]

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "by": self.by, "where": {k: list(v) for k, v in self.where.items()},
            "figures": {k: {"label": self.labels[k], "value": v} for k, v in self.totals.items()},
            "rows": self.rows,
            "overdue": {"cases": self.overdue[0], "average_days": round(self.overdue[1], 2),
                        "longest_days": round(self.overdue[2], 2)},
            "escalations_by_rung": dict(self.escalations),
            "time_in_state": {s: {"stays": n, "average_days": round(a / DAY, 2),
                                  "p90_days": round(p / DAY, 2)}
                              for s, (n, a, p) in self.time_in_state.items()},
            "time_to_resolve": {g: {"cases": n, "average_calendar_days": round(cal, 2),
                                    "average_working_days": round(work, 2)}
                                for g, (n, cal, work) in self.resolution.items()},
            "reassignments_by_unit": dict(self.reassignments),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=2)

    def to_csv(self) -> str:
        """One row per figure: its label, the total, and one column per group."""
        buf = io.StringIO()
        w = csv.writer(buf)
        groups = list(self.rows)
        w.writerow(["figure", "label", "total", *groups])
        for name, total in self.totals.items():
            w.writerow([name, self.labels[name], total,
                        *[self.rows[g].get(name) for g in groups]])
        return buf.getvalue()


def _instant(value: date | datetime | str | None, wf: CompiledWorkflow) -> datetime | None:
    """A period bound as stored (naive UTC); a date means its midnight in the workflow's zone."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = (datetime.fromisoformat(value) if "T" in value or " " in value
                     else date.fromisoformat(value))
        except ValueError:
            raise InvalidQuery(f"report period: {value!r} is not a date (YYYY-MM-DD)") from None
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0), wf.timing.calendar.tz)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return to_db(value)


def resolve_where(wf: CompiledWorkflow, where: Mapping[str, Any] | None) -> dict[str, tuple[Any, ...]]:
    """Filters on case fields: a value, a list of values, or the name of a declared group."""
    out: dict[str, tuple[Any, ...]] = {}
    for key, v in (where or {}).items():
        if key not in wf.fields:
            raise InvalidQuery(f"report filter: {wf.name!r} has no field {key!r}")
        if key in wf.pii:
            raise InvalidQuery(f"report filter: {key!r} is personal data (pii) and cannot filter")
        groups = wf.spec.report.groups.get(key, {})
        if isinstance(v, str) and v in groups:
            out[key] = tuple(groups[v])
        elif isinstance(v, (list, tuple)):
            out[key] = tuple(v)
        else:
            out[key] = (v,)
    return out


def build_report(storage: Storage, registry: Registry, clock: Clock, workflow: str, *,
                 start: date | datetime | str | None = None,
                 end: date | datetime | str | None = None, by: str | None = None,
                 where: Mapping[str, Any] | None = None) -> Report:
    """The declared figures of ``workflow`` for ``[start, end)``, optionally per ``by``."""
    wf = registry.get(workflow)
    spec = wf.spec.report
    if not spec.figures:
        raise InvalidQuery(f"workflow {workflow!r} declares no report figures")
    if by is not None and by not in wf.fields:
        raise InvalidQuery(f"report: {workflow!r} has no field {by!r} to break down by")
    if by is not None and by not in spec.by:
        raise InvalidQuery(f"report: {workflow!r} is not broken down by {by!r}; its definition "
                            f"allows {list(spec.by)}")
    lo, hi = _instant(start, wf), _instant(end, wf)
    base = resolve_where(wf, where)
    q = ReportQueries(storage.store)
    at_end = hi or to_db(clock.now())

    def figure(fig: FigureSpec, scope: Scope) -> dict[str | None, float]:
        sc = Scope(scope.workflow, {**scope.where, **resolve_where(wf, fig.where)}, scope.by)
        if fig.sum is not None:
            return q.events(sc, lo, hi, fig.name, fig.kind, sum_field=fig.sum)
        if fig.count == "cases":
            return q.cases_opened(sc, lo, hi)
        if fig.count == "events":
            return q.events(sc, lo, hi, fig.name, fig.kind)
        if fig.count == "open":
            return q.open_at(sc, hi)
        if fig.count == "closed":
            return q.closed(sc, lo, hi, fig.state, fig.without)
        if fig.count == "overdue":
            return {g: float(v[0]) for g, v in q.overdue(sc, at_end).items()}
        raise InvalidQuery(f"figure kind {fig.count!r} is not known")

    def compute(scope: Scope) -> dict[str | None, dict[str, float | None]]:
        values: dict[str, dict[str | None, float]] = {
            name: figure(fig, scope) for name, fig in spec.figures.items() if fig.ratio is None}
        groups = sorted({g for v in values.values() for g in v}, key=lambda g: (g is None, str(g)))
        out: dict[str | None, dict[str, float | None]] = {}
        for g in groups or [ALL]:
            row: dict[str, float | None] = {}
            for name, fig in spec.figures.items():
                if fig.ratio is None:
                    row[name] = float(values[name].get(g, 0))
                else:
                    num, den = (values[p].get(g, 0) for p in fig.ratio)
                    row[name] = (num / den) if den else None
            out[g] = row
        return out

    with q.snapshot():
        totals = compute(Scope(wf.name, base))[ALL]
        rows: dict[str, dict[str, float | None]] = {}
        if by is not None:
            per_group = compute(Scope(wf.name, base, by))
            rows = {str(g) if g is not None else "(none)": r for g, r in per_group.items()}
        overdue = q.overdue(Scope(wf.name, base), at_end).get(ALL, (0, 0.0, 0.0))
        esc = q.escalations(Scope(wf.name, base), lo, hi)
        tis = q.time_in_state(Scope(wf.name, base), lo, hi)
        closed = q.resolution(Scope(wf.name, base, by), lo, hi)
        moved = q.reassignments(Scope(wf.name, base), lo, hi)
    tz = wf.timing.calendar.tz
    return Report(
        workflow=wf.name, start=from_db(lo).astimezone(tz) if lo else None,
        end=from_db(hi).astimezone(tz) if hi else None,
        by=by, where=base,
        labels={n: f.label or n.replace("_", " ") for n, f in spec.figures.items()},
        totals=totals, rows=rows, overdue=overdue,
        escalations={rung: n for (_, rung), n in esc.items()}, time_in_state=tis,
        resolution=_resolution(wf, closed, by is not None),
        reassignments={str(u) if u is not None else "(none)": n for u, n in moved.items()},
        ratios=frozenset(n for n, f in spec.figures.items() if f.ratio is not None))


def _resolution(wf: CompiledWorkflow, closed: list[tuple[Any, datetime, datetime]],
                by_group: bool) -> dict[str, tuple[int, float, float]]:
    """Mean time from opening to closing, in calendar days and in working days on the
    official calendar, overall (``all``) and per group."""
    if not closed:
        return {}
    cal = wf.timing.calendars.official
    tz = cal.tz
    first = min(from_db(o) for _, o, _ in closed).astimezone(tz).date()
    last = max(from_db(c) for _, _, c in closed).astimezone(tz).date()
    index = WorkdayIndex(cal, first, last)
    sums: dict[str, list[float]] = {}
    for g, opened, shut in closed:
        a, b = from_db(opened), from_db(shut)
        keys = ["all"] + ([str(g) if g is not None else "(none)"] if by_group else [])
        for k in keys:
            s = sums.setdefault(k, [0, 0.0, 0.0])
            s[0] += 1
            s[1] += (b - a).total_seconds() / DAY
            s[2] += index.seconds(a, b) / DAY
    return {k: (int(n), cal_days / n, work / n) for k, (n, cal_days, work) in sums.items()}
