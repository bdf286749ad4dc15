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
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from .calendars import WorkdayIndex
from .clock import Clock, from_db, to_db
from .definition import FigureSpec
from .errors import InvalidQuery
from .figures import TOTAL, UNIT, Plan, Tally, key_value, plan_problem, resolve_where
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
    # "figures": read from the maintained figures; "events": counted from the events
    # (``note`` says why the figures could not answer, when they were not asked to).
    source: str = "events"
    note: str = ""

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
            "source": self.source, **({"note": self.note} if self.note else {}),
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


SOURCES = ("auto", "figures", "events")


def build_report(storage: Storage, registry: Registry, clock: Clock, workflow: str, *,
                 start: date | datetime | str | None = None,
                 end: date | datetime | str | None = None, by: str | None = None,
                 where: Mapping[str, Any] | None = None, source: str = "auto",
                 tally: Tally | None = None) -> Report:
    """The declared figures of ``workflow`` for ``[start, end)``, optionally per ``by``:
    from the maintained figures of ``tally`` where they can answer (``source``), else
    counted from the cases and events."""
    wf = registry.get(workflow)
    spec = wf.spec.report
    if not spec.figures:
        raise InvalidQuery(f"workflow {workflow!r} declares no report figures")
    if by is not None and by not in wf.fields:
        raise InvalidQuery(f"report: {workflow!r} has no field {by!r} to break down by")
    if by is not None and by not in spec.by:
        raise InvalidQuery(f"report: {workflow!r} is not broken down by {by!r}; its definition "
                            f"allows {list(spec.by)}")
    if source not in SOURCES:
        raise InvalidQuery(f"report: source must be one of {list(SOURCES)}, not {source!r}")
    lo, hi = _instant(start, wf), _instant(end, wf)
    base = resolve_where(wf, where)
    q = ReportQueries(storage.store)
    at_end = hi or to_db(clock.now())
    with q.snapshot():
        plan = tally.plan(wf.name) if tally is not None else None
        why = ("the figures were not asked for" if source == "events"
               else _why_not_figures(q, plan, wf, lo, hi, base))
        if source == "figures" and why:
            raise InvalidQuery(f"report: the maintained figures cannot answer: {why}")
        if why is None:
            assert plan is not None
            parts = _FromFigures(q, plan, wf, lo, hi, at_end).parts(by)
        else:
            parts = _from_events(q, wf, lo, hi, at_end, by, base)
    tz = wf.timing.calendar.tz
    totals, rows, overdue, esc, tis, closed, moved = parts
    return Report(
        workflow=wf.name, start=from_db(lo).astimezone(tz) if lo else None,
        end=from_db(hi).astimezone(tz) if hi else None,
        by=by, where=base,
        labels={n: f.label or n.replace("_", " ") for n, f in spec.figures.items()},
        totals=totals, rows=rows, overdue=overdue, escalations=esc, time_in_state=tis,
        resolution=closed, reassignments=moved,
        ratios=frozenset(n for n, f in spec.figures.items() if f.ratio is not None),
        source="figures" if why is None else "events",
        note=why if (why is not None and source == "auto") else "")


_Parts = tuple[dict[str, float | None], dict[str, dict[str, float | None]],
               tuple[int, float, float], dict[str, int], dict[str, tuple[int, float, float]],
               dict[str, tuple[int, float, float]], dict[str, int]]


def _rows(wf: CompiledWorkflow, values: Mapping[str, Mapping[str | None, float]]
          ) -> dict[str | None, dict[str, float | None]]:
    """Each group's figures (ratios from their two parts) from each figure's values per group."""
    spec = wf.spec.report
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


def _named(groups: Mapping[str | None, Any]) -> dict[str, Any]:
    return {str(g) if g is not None else "(none)": r for g, r in groups.items()}


def _from_events(q: ReportQueries, wf: CompiledWorkflow, lo: datetime | None,
                 hi: datetime | None, at_end: datetime, by: str | None,
                 base: dict[str, tuple[Any, ...]]) -> _Parts:
    """The report counted from the cases and events: one aggregate query per figure."""
    spec = wf.spec.report

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
        return _rows(wf, {name: figure(fig, scope) for name, fig in spec.figures.items()
                          if fig.ratio is None})

    totals = compute(Scope(wf.name, base))[ALL]
    rows = _named(compute(Scope(wf.name, base, by))) if by is not None else {}
    overdue = q.overdue(Scope(wf.name, base), at_end).get(ALL, (0, 0.0, 0.0))
    esc = q.escalations(Scope(wf.name, base), lo, hi)
    tis = q.time_in_state(Scope(wf.name, base), lo, hi)
    closed = q.resolution(Scope(wf.name, base, by), lo, hi)
    moved = q.reassignments(Scope(wf.name, base), lo, hi)
    return (totals, rows, overdue, {rung: n for (_, rung), n in esc.items()}, tis,
            _resolution(wf, closed, by is not None), _named(moved))


def _local_day(at: datetime | None, wf: CompiledWorkflow) -> str | None:
    """The local date of a period bound, if it is a local midnight (else ``"?"``)."""
    if at is None:
        return None
    local = from_db(at).astimezone(wf.timing.calendar.tz)
    return local.date().isoformat() if local.time() == time(0) else "?"


def _why_not_figures(q: ReportQueries, plan: Plan | None, wf: CompiledWorkflow,
                     lo: datetime | None, hi: datetime | None,
                     base: Mapping[str, Any]) -> str | None:
    """Why the maintained figures cannot give this report (None: they can)."""
    if plan is None:
        return "this engine keeps no figures for the workflow"
    if base:
        return "a report filtered by case fields (where) is counted from the events"
    if "?" in (_local_day(lo, wf), _local_day(hi, wf)):
        return "the period does not start and end at a local midnight"
    return plan_problem(plan, q.figure_plan(wf.name))


class _FromFigures:
    """The report read from the maintained figures: a few summed rows per figure."""

    def __init__(self, q: ReportQueries, plan: Plan, wf: CompiledWorkflow, lo: datetime | None,
                 hi: datetime | None, at_end: datetime) -> None:
        self.q, self.plan, self.wf, self.at_end = q, plan, wf, at_end
        self.lo, self.hi = _local_day(lo, wf), _local_day(hi, wf)
        self.open = [n for n, f, _ in plan.figures if f.count == "open"]

    def _cells(self, dim: str | None, start: str | None, figures: list[str] | None = None
               ) -> dict[tuple[str, str | None], list[float]]:
        """(figure, group) -> [n, s] for a breakdown ``dim``, or (None) the totals: the sum
        over the values of the plan's first breakdown."""
        stored = self.plan.total_dim if dim is None else dim
        out: dict[tuple[str, str | None], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for (f, v), (n, s) in self.q.cells(self.plan.workflow, stored, start, self.hi,
                                           figures).items():
            acc = out[(f, ALL if dim is None else key_value(v))]
            acc[0] += n
            acc[1] += s
        return out

    def values(self, dim: str | None) -> dict[str, dict[str | None, float]]:
        period = self._cells(dim, self.lo)
        upto = (self._cells(dim, None, [p + n for n in self.open for p in ("@in:", "@out:")])
                if self.open else {})
        out: dict[str, dict[str | None, float]] = {}
        for name, fig, where in self.plan.figures:
            got: dict[str | None, float] = {}
            if fig.count == "overdue":
                sc = Scope(self.plan.workflow, where, dim)
                got = {g: float(v[0]) for g, v in self.q.overdue(sc, self.at_end).items()}
            elif fig.count == "open":
                for (f, g), (n, _) in upto.items():
                    if f == "@in:" + name:
                        got[g] = got.get(g, 0.0) + n
                    elif f == "@out:" + name:
                        got[g] = got.get(g, 0.0) - n
                got = {g: n for g, n in got.items() if n > 0}
            elif fig.sum is not None:
                got = {g: s for (f, g), (n, s) in period.items() if f == name and n > 0}
            else:
                got = {g: n for (f, g), (n, _) in period.items() if f == name and n != 0}
            out[name] = got
        return out

    def parts(self, by: str | None) -> _Parts:
        q, w, lo, hi = self.q, self.plan.workflow, self.lo, self.hi
        totals = _rows(self.wf, self.values(None))[ALL]
        rows = _named(_rows(self.wf, self.values(by))) if by is not None else {}
        overdue = q.overdue(Scope(w, {}), self.at_end).get(ALL, (0, 0.0, 0.0))
        total = q.cells(w, TOTAL, lo, hi)
        esc = {f[5:]: int(n) for (f, _), (n, _) in total.items() if f.startswith("@esc:") and n}
        tis: dict[str, tuple[int, float, float]] = {}
        for (f, _), (n, secs) in sorted(total.items()):
            if f.startswith("@stay:") and n > 0:
                state, count = f[6:], int(n)
                p90 = q.stay_rank(w, state, lo, hi, -(-9 * count // 10))
                tis[state] = (count, secs / count, p90 or 0.0)
        closed: dict[str, tuple[int, float, float]] = {}

        def resolution(cells: Mapping[tuple[str, str | None], list[float]], key: Any) -> None:
            for (f, g), (n, cal) in cells.items():
                if f == "@res" and n > 0:
                    work = cells.get(("@resw", g), [0.0, 0.0])[1]
                    closed[key(g)] = (int(n), cal / n, work / n)

        resolution(self._cells(None, lo, ["@res", "@resw"]), lambda g: "all")
        if by is not None:
            resolution(self._cells(by, lo, ["@res", "@resw"]),
                       lambda g: str(g) if g is not None else "(none)")
        moved: dict[str, int] = {_shown(v): int(n) for (_, v), (n, _) in
                                 q.cells(w, UNIT, lo, hi, ["@reassign"]).items() if n}
        return totals, rows, overdue, esc, tis, closed, moved


def _shown(stored: str) -> str:
    """A stored group value as a report names its group."""
    v = key_value(stored)
    return v if v is not None else "(none)"


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
