"""Maintained report figures: what each command adds to its workflow's report, kept in
the command's own transaction, so a report sums a few rows instead of scanning events.

A workflow's report declares figures (see :class:`~casework.definition.FigureSpec`).
For each case, its *contribution* is a function of the case as it is now and its
events: one cell per figure, local day (in the workflow's zone) and group (the total,
and the case's value of each breakdown field), plus one row per completed stay in a
state (for time-in-state percentiles). A command adds what its new events contribute;
a command that changes a field a figure depends on (a breakdown field, a figure's
``where`` field, the lead unit) takes the case's old contribution back and adds its new
one, so a case is always counted under its current values, as the figures computed
from the events count it.

The figures follow one report definition (a fingerprint in ``report_plans``): a
definition whose report changes, or a database that had cases before the figures
existed, has its reports counted from the events until :meth:`Tally.rebuild` builds
the figures again; ``Tally.rebuild(check=True)`` recomputes them from the events and
names every difference.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .calendars import Calendar, ChinaWorkdays, WorkdayIndex, calendar_data
from .clock import Clock, from_db, to_db
from .definition import FigureSpec
from .errors import InvalidQuery, UnknownWorkflow
from .machine import CompiledWorkflow
from .persistence.records import CaseRecord, EventRecord
from .persistence.tx import ReadTx, WriteTx, dumps
from .registry import Registry
from .storage import Storage

DAY = 86_400.0
TOTAL = ""  # the dim (and value) of the total
UNIT = "@unit"  # the dim of the lead unit column (reassignments per unit)
NONE = "~"  # the value of a case with no value in a breakdown field
STALE = "stale"  # the plan of figures written under two report definitions
VERSION = "3"  # of the contribution rules below; a change rebuilds every workflow's figures

Cell = tuple[str, str, str, str]  # dim, figure, value, day
Sums = tuple[float, float]  # a cell's n and s
Stay = tuple[str, int, str, str, float]  # case id, seq, state, day, seconds


def value_key(text: str | None) -> str:
    """A group's value as stored (a prefix keeps a missing value apart from any text)."""
    return NONE if text is None else "v:" + text


def key_value(stored: str) -> str | None:
    return None if stored == NONE else stored[2:]


@dataclass(frozen=True)
class Plan:
    """What a workflow's report needs maintained, compiled from its definition."""

    workflow: str
    fingerprint: str
    tz: ZoneInfo
    by: tuple[str, ...]
    watched: tuple[str, ...]  # fields whose change moves a case's whole contribution
    figures: tuple[tuple[str, FigureSpec, Mapping[str, tuple[Any, ...]]], ...]
    without: tuple[str, ...]  # event names some closed figure must not see
    event_figures: tuple[tuple[str, FigureSpec, Mapping[str, tuple[Any, ...]]], ...]
    wf: CompiledWorkflow = field(compare=False)

    @property
    def total_dim(self) -> str:
        """The dim whose values' cells sum to a figure's total."""
        return self.by[0] if self.by else TOTAL


def plan_of(wf: CompiledWorkflow) -> Plan | None:
    """The maintained figures of ``wf``'s report (None if it declares none)."""
    spec = wf.spec.report
    if not spec.figures:
        return None
    figures = tuple((name, fig, resolve_where(wf, fig.where))
                    for name, fig in spec.figures.items() if fig.ratio is None)
    watched = sorted({*spec.by, *(k for _, _, w in figures for k in w)})
    tz = wf.timing.calendar.tz
    digest = hashlib.sha256(json.dumps(
        [VERSION, spec.model_dump(mode="json"), str(tz),
         _calendar_key(wf.timing.calendars.official)], sort_keys=True).encode()).hexdigest()
    return Plan(wf.name, digest, tz, tuple(spec.by), tuple(watched), figures,
                tuple(sorted({n for _, f, _ in figures for n in f.without})),
                tuple(f for f in figures if f[1].count == "events" or f[1].sum is not None), wf)


def _calendar_key(cal: Calendar) -> list[Any]:
    """What the working days of the time to resolve are counted on (a closed case's are
    kept when it closes): another calendar, holiday data or declared year is another plan."""
    key: list[Any] = [calendar_data(cal), str(cal.tz)]
    if isinstance(cal, ChinaWorkdays):
        key.append(sorted((y, sorted(d.isoformat() for d in dy.days_off),
                           sorted(d.isoformat() for d in dy.workdays))
                          for y, dy in cal.declared.items()))
    return key


def _same(a: Any, b: Any) -> bool:
    """Whether two values of a field are the same to a report: of one JSON type and the
    same JSON (``1`` and ``1.0``, ``[0]`` and ``[false]`` are equal in Python, not here)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, str):
        return a == b
    return dumps(a) == dumps(b)


def resolve_where(wf: CompiledWorkflow, where: Mapping[str, Any] | None) -> dict[str, tuple[Any, ...]]:
    """Report filters on case fields: a value, a list of values, or the name of a declared
    group of a field's values."""
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


def plan_problem(plan: Plan, stored: str | None) -> str | None:
    """Why the stored figures (following ``stored``) cannot be read for ``plan``: None
    when they can. One wording for reports and for the check."""
    if stored == plan.fingerprint:
        return None
    if stored is None:
        return "the figures are not built yet (casework rebuild-figures)"
    if stored == STALE:
        return ("the figures were written under two report definitions (an engine on "
                "another version of the workflow wrote cases; casework rebuild-figures)")
    return "the figures follow another report definition (casework rebuild-figures)"


def is_move(ev: EventRecord) -> bool:
    """An event that put the case in a state (the stays of time in state run between them)."""
    return ev.kind == "open" or (ev.kind in ("transition", "migration")
                                 and (ev.from_state is None or ev.from_state != ev.to_state))


class Contributions:
    """The cells and stays one case gives, as plain dictionaries to add or take back.

    A cell holds two numbers: ``n`` (a count) and ``s`` (a sum: of a figure's field, of
    the seconds of the stays, of the days to resolve). With breakdowns, a figure's cells
    are kept per value of each ``by`` field only: its total is the sum over the values of
    the first (each case has exactly one value there, or none)."""

    def __init__(self, plan: Plan, group_text: Any) -> None:
        self.plan = plan
        self.text = group_text
        self.cells: dict[Cell, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.stays: list[Stay] = []
        self.last: tuple[datetime, str] | None = None  # the last move (after :meth:`whole`)
        self._days: dict[datetime, str] = {}
        self._groups_of: tuple[Any, list[tuple[str, str]]] | None = None

    def day(self, at: datetime) -> str:
        day = self._days.get(at)
        if day is None:
            day = self._days[at] = from_db(at).astimezone(self.plan.tz).date().isoformat()
        return day

    def _groups(self, rec: CaseRecord) -> list[tuple[str, str]]:
        cached = self._groups_of
        if cached is not None and cached[0] is rec.data:
            return cached[1]
        if self.plan.by:
            groups = [(f, value_key(self.text(rec.data.get(f)))) for f in self.plan.by]
        else:
            groups = [(TOTAL, TOTAL)]
        self._groups_of = (rec.data, groups)
        return groups

    @staticmethod
    def _where(rec: CaseRecord, where: Mapping[str, tuple[Any, ...]]) -> bool:
        for key, values in where.items():
            v = rec.data.get(key)
            if v is None or not any(v == w and isinstance(v, bool) == isinstance(w, bool)
                                    for w in values):
                return False
        return True

    def _add(self, groups: list[tuple[str, str]], figure: str, day: str, n: float,
             s: float = 0.0) -> None:
        cells = self.cells
        for dim, value in groups:
            cell = cells[(dim, figure, value, day)]
            cell[0] += n
            cell[1] += s

    def opening(self, rec: CaseRecord) -> None:
        groups, day = self._groups(rec), self.day(rec.opened_at)
        for name, fig, where in self.plan.figures:
            if fig.count in ("cases", "open") and self._where(rec, where):
                self._add(groups, name if fig.count == "cases" else "@in:" + name, day, 1)

    def events(self, rec: CaseRecord, events: Iterable[EventRecord]) -> None:
        groups = self._groups(rec)
        for ev in events:
            for name, fig, where in self.plan.event_figures:
                if (fig.name and ev.name not in fig.name) or (fig.kind and ev.kind not in fig.kind):
                    continue
                if not self._where(rec, where):
                    continue
                if fig.sum is None:
                    self._add(groups, name, self.day(ev.at), 1)
                else:
                    v = ev.details.get(fig.sum)
                    number = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0
                    self._add(groups, name, self.day(ev.at), 1, number)
            if ev.kind == "escalation":
                self.cells[(TOTAL, "@esc:" + ev.name, TOTAL, self.day(ev.at))][0] += 1
            elif ev.kind == "assignment" and ev.name.startswith("reassign:"):
                self.cells[(UNIT, "@reassign", value_key(rec.unit), self.day(ev.at))][0] += 1

    def closing(self, rec: CaseRecord, names: set[str], index: WorkdayIndex | None) -> None:
        """What closing ``rec`` gives (``names``: the names of its events, for ``without``)."""
        if rec.closed_at is None:
            return
        groups, day = self._groups(rec), self.day(rec.closed_at)
        for name, fig, where in self.plan.figures:
            if not self._where(rec, where):
                continue
            if fig.count == "open":
                self._add(groups, "@out:" + name, day, 1)
            elif fig.count == "closed":
                if fig.state and rec.state not in fig.state:
                    continue
                if names.intersection(fig.without):
                    continue
                self._add(groups, name, day, 1)
        a, b = from_db(rec.opened_at), from_db(rec.closed_at)
        cal = self.plan.wf.timing.calendars.official
        if index is None:
            index = WorkdayIndex(cal, a.astimezone(cal.tz).date(), b.astimezone(cal.tz).date())
        self._add(groups, "@res", day, 1, (b - a).total_seconds() / DAY)
        self._add(groups, "@resw", day, 0, index.seconds(a, b) / DAY)

    def moves(self, case_id: str, previous: tuple[datetime, str] | None,
              events: Iterable[EventRecord]) -> tuple[datetime, str] | None:
        """The stays that the move events among ``events`` end (``previous``: when and into
        which state the case last moved before them); the last move after them."""
        for ev in events:
            if not is_move(ev):
                continue
            if previous is not None:
                at, state = previous
                secs = (ev.at - at).total_seconds()
                day = self.day(ev.at)
                self.stays.append((case_id, ev.seq, state, day, secs))
                cell = self.cells[(TOTAL, "@stay:" + state, TOTAL, day)]
                cell[0] += 1
                cell[1] += secs
            previous = (ev.at, ev.to_state or "")
        return previous

    def whole(self, rec: CaseRecord, events: Sequence[EventRecord],
              index: WorkdayIndex | None = None) -> Contributions:
        """Everything ``rec`` with ``events`` (all of them) gives."""
        self.opening(rec)
        self.events(rec, events)
        self.closing(rec, {e.name for e in events}, index)
        self.last = self.moves(rec.id, None, events)
        return self


@dataclass
class FiguresCheck:
    """The outcome of :meth:`Tally.rebuild`: the cases read, the cells and stays kept, and
    (with ``check``) every difference between the stored figures and the events."""

    workflow: str
    cases: int = 0
    cells: int = 0
    stays: int = 0
    differences: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differences


class Tally:
    """Keeps the maintained figures: called at the end of every write transaction's unit
    of work (:meth:`flush`), after a ledger import (:meth:`add_cases`), and by an
    operator (:meth:`rebuild`, :meth:`check`)."""

    RECHECK = 30.0  # seconds before the cases of a workflow whose figures are not built are counted again
    MOVES = 50_000  # cases whose last move is remembered

    def __init__(self, storage: Storage, registry: Registry, clock: Clock) -> None:
        self._storage = storage
        self._registry = registry
        self._clock = clock
        self._plans: dict[int, Plan | None] = {}
        self._had_cases: dict[str, float] = {}  # workflow: when it was seen to have cases
        # case id -> (its last seq, when and into which state it last moved): valid while
        # the case's last seq is still that one, so another process's writes are noticed.
        self._moves: dict[str, tuple[int, datetime, str]] = {}

    def plan(self, workflow: str) -> Plan | None:
        try:
            wf = self._registry.get(workflow)
        except UnknownWorkflow:  # a case of a workflow this engine does not load
            return None
        key = id(wf)
        if key not in self._plans:
            self._plans[key] = plan_of(wf)
        return self._plans[key]

    def _built(self, tx: WriteTx, plan: Plan, opened_here: int) -> bool:
        """Whether the stored figures of the plan's workflow follow this plan, read in every
        transaction (a primary-key read): a rebuild by another engine or process is
        followed at once, and an engine on another report definition is noticed.

        Not built: on PostgreSQL the command first holds off a rebuild that has not read
        the cases yet (or waits for one that has) and looks again, so that it is either in
        the rebuild's reading or adds its own. A workflow with no cases but those opened in
        this transaction starts its figures now. Figures that follow another definition
        while this engine writes cases are marked stale: nobody reads them until rebuilt.
        """
        stored = tx.figure_plan(plan.workflow)
        if stored == plan.fingerprint:
            return True
        tx.dialect.hold_figures(tx.cur)
        stored = tx.figure_plan(plan.workflow)
        if stored == plan.fingerprint:
            return True
        now = time.monotonic()
        if stored is None:
            had = self._had_cases.get(plan.workflow)
            if had is None or now - had > self.RECHECK:
                cases = tx.count_cases_of(plan.workflow)
                # Read again after the count: the transaction that wrote a case counted here
                # and started the figures committed both at once.
                stored = tx.figure_plan(plan.workflow)
                if stored == plan.fingerprint:
                    return True
                if stored is None and cases <= opened_here:
                    # Two processes opening their first cases at once both start them (the
                    # same plan; the second insert waits for the first, then does nothing).
                    return tx.start_figure_plan(plan.workflow, plan.fingerprint,
                                                to_db(self._clock.now())) == plan.fingerprint
                if stored is None:
                    self._had_cases[plan.workflow] = now
        if stored is not None and stored not in (STALE, plan.fingerprint):
            tx.set_figure_plan(plan.workflow, STALE, to_db(self._clock.now()))
        return False

    def flush(self, tx: WriteTx) -> None:
        """Add what the cases written since the last flush contribute."""
        touched = tx.take_touched()
        if not touched:
            return
        opened: dict[str, int] = defaultdict(int)
        for t in touched.values():
            if t.before is None and t.after is not None:
                opened[t.after.workflow] += 1
        for case_id, t in touched.items():
            rec = t.after if t.after is not None else tx.get_case(case_id)
            if rec is None:
                continue
            plan = self.plan(rec.workflow)
            if plan is None or not self._built(tx, plan, opened[rec.workflow]):
                continue
            self._case(tx, plan, case_id, t.before, rec, t.events)

    def _case(self, tx: WriteTx, plan: Plan, case_id: str, before: CaseRecord | None,
              after: CaseRecord, new: list[EventRecord]) -> None:
        text = tx.dialect.group_text
        add = Contributions(plan, text)
        last: tuple[datetime, str] | None
        if before is None:
            add.whole(after, new)
            last = add.last
        elif (before.closed_at is not None or before.unit != after.unit
              or before.workflow != after.workflow
              or not all(_same(before.data.get(k), after.data.get(k)) for k in plan.watched)):
            events = tx.history(case_id)
            old = [e for e in events if e.seq <= before.last_seq]
            add.whole(after, events)
            last = add.last
            back = Contributions(plan, text).whole(before, old)
            for cell, (n, s) in back.cells.items():
                mine = add.cells[cell]
                mine[0] -= n
                mine[1] -= s
            # A stay depends on the events alone: the old ones are kept as they are.
            add.stays = [st for st in add.stays if st[1] > before.last_seq]
        else:
            add.events(after, new)
            if after.closed_at is not None:
                names = ({e.name for e in tx.history(case_id)} if plan.without
                         else set())
                add.closing(after, names, None)
            first = next((e for e in new if is_move(e)), None)
            known = self._moves.get(case_id)
            previous = (known[1], known[2]) if known is not None and known[0] == before.last_seq \
                else None
            if first is not None:
                if previous is None:
                    previous = tx.last_move(case_id, first.seq)
                last = add.moves(case_id, previous, new)
            else:
                last = previous
        if last is not None and not after.final:
            if len(self._moves) >= self.MOVES:
                self._moves.clear()
            self._moves[case_id] = (after.last_seq, *last)
        else:
            self._moves.pop(case_id, None)
        tx.add_figures(plan.workflow, _kept(add.cells).items(), spread=case_id)
        tx.add_stays(plan.workflow, add.stays)

    def add_cases(self, tx: WriteTx, case_ids: Iterable[str]) -> None:
        """Add the whole contribution of cases written without the command path (a ledger
        import), inside the transaction that wrote them."""
        tx.take_touched()
        found = [rec for rec in map(tx.get_case, case_ids) if rec is not None]
        new: dict[str, int] = defaultdict(int)
        for rec in found:
            new[rec.workflow] += 1
        for rec in found:
            plan = self.plan(rec.workflow)
            if plan is None or not self._built(tx, plan, new[rec.workflow]):
                continue
            self._case(tx, plan, rec.id, None, rec, tx.history(rec.id))

    @staticmethod
    def _compute(tx: ReadTx, plan: Plan
                 ) -> tuple[int, dict[Cell, Sums], dict[tuple[str, int], tuple[str, str, float]]]:
        cells: dict[Cell, list[float]] = defaultdict(lambda: [0.0, 0.0])
        stays: dict[tuple[str, int], tuple[str, str, float]] = {}
        spans = _Spans(plan)
        cases = 0
        for batch in tx.case_batches(plan.workflow):
            for rec, events in batch:
                cases += 1
                one = Contributions(plan, tx.dialect.group_text).whole(rec, events, spans.of(rec))
                for cell, (n, s) in one.cells.items():
                    mine = cells[cell]
                    mine[0] += n
                    mine[1] += s
                for c, q, st, d, x in one.stays:
                    stays[(c, q)] = (st, d, x)
        return cases, _kept(cells), stays

    def rebuild(self, workflow: str) -> FiguresCheck:
        """Recompute the figures of ``workflow`` from its cases and events and keep them
        (in one transaction: the commands of other processes wait for it)."""
        started = time.perf_counter()
        plan = self.plan(workflow)
        out = FiguresCheck(workflow)
        if plan is None:
            return out
        with self._storage.write() as tx:
            tx.drop_figures(workflow)
            out.cases, cells, stays = self._compute(tx, plan)
            out.cells, out.stays = len(cells), len(stays)
            tx.add_figures(workflow, cells.items())
            tx.add_stays(workflow, ((c, q, st, d, x) for (c, q), (st, d, x) in stays.items()))
            tx.set_figure_plan(workflow, plan.fingerprint, to_db(self._clock.now()))
            tx.take_touched()
        with self._storage.errors():
            self._storage.store.refresh_statistics("report_figures", "report_stays")
        out.seconds = time.perf_counter() - started
        return out

    def check(self, workflow: str) -> FiguresCheck:
        """Recompute the figures of ``workflow`` from the events and name every difference
        from the stored ones (changes nothing)."""
        started = time.perf_counter()
        plan = self.plan(workflow)
        out = FiguresCheck(workflow)
        if plan is None:
            return out
        with self._storage.read() as tx:
            problem = plan_problem(plan, tx.figure_plan(workflow))
            if problem is not None:
                out.differences.append(problem)
            out.cases, cells, stays = self._compute(tx, plan)
            out.cells, out.stays = len(cells), len(stays)
            have_cells, have_stays = tx.stored_figures(workflow)
            out.differences += _differences(cells, have_cells, stays, have_stays)
        out.seconds = time.perf_counter() - started
        return out


def _kept(cells: Mapping[Cell, Sequence[float]]) -> dict[Cell, Sums]:
    """The cells worth a row: not both zero."""
    return {c: (v[0], v[1]) for c, v in cells.items() if v[0] != 0 or v[1] != 0}


class _Spans:
    """One working-day index for the closing of many cases, widened when a case needs."""

    def __init__(self, plan: Plan) -> None:
        self.cal = plan.wf.timing.calendars.official
        self.index: WorkdayIndex | None = None

    def of(self, rec: CaseRecord) -> WorkdayIndex | None:
        if rec.closed_at is None:
            return self.index
        tz = self.cal.tz
        lo = from_db(rec.opened_at).astimezone(tz).date()
        hi = from_db(rec.closed_at).astimezone(tz).date()
        ix = self.index
        if ix is None or lo < ix.first or hi + timedelta(days=1) not in ix.before:
            first = min(lo, ix.first) if ix is not None else lo
            last = max(hi, max(ix.before) - timedelta(days=1)) if ix is not None else hi
            self.index = ix = WorkdayIndex(self.cal, first - timedelta(days=366),
                                           last + timedelta(days=366))
        return ix


def _differences(want: Mapping[Cell, Sums], have: Mapping[Cell, Sums],
                 stays: Mapping[tuple[str, int], tuple[str, str, float]],
                 have_stays: Mapping[tuple[str, int], tuple[str, str, float]],
                 limit: int = 50) -> list[str]:
    out: list[str] = []
    for cell in sorted(set(want) | set(have)):
        a, b = want.get(cell, (0.0, 0.0)), have.get(cell, (0.0, 0.0))
        if any(abs(x - y) > 1e-6 * max(1.0, abs(x)) for x, y in zip(a, b, strict=True)):
            dim, figure, value, day = cell
            group = "total" if dim == TOTAL else f"{dim}={key_value(value)}"
            shown = (lambda v: f"{v[0]:g}") if a[1] == b[1] == 0 else (
                lambda v: f"{v[0]:g} (sum {v[1]:g})")
            out.append(f"{figure} on {day} ({group}): the events give {shown(a)}, "
                       f"stored {shown(b)}")
    for key in sorted(set(stays) | set(have_stays)):
        a_, b_ = stays.get(key), have_stays.get(key)
        if a_ is None or b_ is None or a_[:2] != b_[:2] or abs(a_[2] - b_[2]) > 1e-3:
            out.append(f"stay ended by event {key[1]} of case {key[0]}: the events give "
                       f"{a_ and a_[0]}, stored {b_ and b_[0]}")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out
