"""SLA clocks: deadlines that start, pause, resume, move and stop with the case.

Each deadline of a definition is a clock kept on the case (``cases.clocks``)
with its allowed business time, the business time already elapsed, and when
its current running stretch began. Whenever a command moves the case, the
clocks are brought up to date and the plan says which of the case's timers
to cancel and which to create, all in the command's transaction:

* start: entering the deadline's ``state``, or its ``start`` trigger;
* stop: leaving that state, entering a ``stop`` state, or any final state;
* pause / resume: entering / leaving a ``pause_in`` state (the time left is kept);
* extend: the ``extend`` trigger adds the days given in its input field.

Warnings fire when the given share of the allowed time has passed (earlier
inside a sensitive period); the breach fires at the due instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from .calendars import DAY, Calendar, Duration, business_seconds, instant_after, make_calendar
from .clock import to_db
from .definition import DeadlineSpec, WorkflowSpec
from .persistence import NewTimer, TimerRecord
from .statetree import StateTree


@dataclass(frozen=True)
class SensitivePeriod:
    """A window of local dates (inclusive) with tighter monitoring."""

    name: str
    start: date
    end: date
    warn_factor: float = 0.8

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end


@dataclass
class TimerPlan:
    """What a command does to the case's timers, and what its event should say about them."""

    cancel: set[str] = field(default_factory=set)
    insert: list[NewTimer] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.cancel or self.insert)


@dataclass(frozen=True)
class _Deadline:
    name: str
    spec: DeadlineSpec
    total: float
    calendar: Calendar
    scope: frozenset[str] | None
    stop: frozenset[str]
    pause: frozenset[str]


@dataclass(frozen=True)
class _Cycle:
    name: str
    every: str
    leaves: frozenset[str]
    state: str


def chained(case_id: str, workflow: str, name: str, state: str | None,
            instants: list[tuple[datetime, str, dict[str, Any]]]) -> NewTimer:
    """One timer row for a deadline's instants (its warnings, then its breach): due at the
    first, carrying the others in its payload (``then``). When it fires, the scheduler
    stores the next one; so a deadline costs one row and one index entry at a time, and
    cancelling it (leaving its state, pausing it) touches one row."""
    instants = sorted(instants, key=lambda i: i[0])
    (when, kind, payload), rest = instants[0], instants[1:]
    if rest:
        payload = {**payload, "then": [{"kind": k, "at": _iso(w), "payload": p}
                                       for w, k, p in rest]}
    return NewTimer(case_id, workflow, kind, name, state, when, payload)


def successor(timer: TimerRecord) -> NewTimer | None:
    """The row to store when a chained ``timer`` fires: the deadline's next instant (its
    next warning, or its breach), carrying the instants after it; None at the chain's end."""
    then = timer.payload.get("then") or []
    if not then:
        return None
    first, rest = then[0], then[1:]
    payload = {**first["payload"], "then": rest} if rest else dict(first["payload"])
    return NewTimer(timer.case_id, timer.workflow, first["kind"], timer.name, timer.state,
                    to_db(_dt(first["at"])), payload)


def instants(timer: TimerRecord) -> list[TimerRecord]:
    """Each instant a pending (possibly chained) timer row stands for, with the row's id."""
    out: list[TimerRecord] = []
    t: TimerRecord | None = timer
    while t is not None:
        out.append(replace(t, payload={k: v for k, v in t.payload.items() if k != "then"}))
        nxt = successor(t)
        t = None if nxt is None else TimerRecord(
            timer.id, nxt.case_id, nxt.workflow, nxt.kind, nxt.name, nxt.state, nxt.due_at,
            timer.status, nxt.payload)
    return out


def _iso(d: datetime) -> str:
    return d.isoformat()


def _dt(s: str) -> datetime:
    return datetime.fromisoformat(s)


class Timing:
    """The deadlines and per-case cycles of one workflow version."""

    def __init__(self, spec: WorkflowSpec, tree: StateTree, *, calendar: str | None = None,
                 strict_calendar: bool = False,
                 sensitive: tuple[SensitivePeriod, ...] = ()) -> None:
        self.workflow = spec.workflow
        self.tree = tree
        self.sensitive = sensitive
        cal_name = calendar or spec.calendar
        self.calendar = make_calendar(cal_name, spec.timezone, strict=strict_calendar)
        every_day = make_calendar("calendar", spec.timezone)
        workdays = (self.calendar if cal_name != "calendar"
                    else make_calendar("cn_workdays", spec.timezone, strict=strict_calendar))
        self._by_unit: dict[str, Calendar] = {"days": self.calendar, "workdays": workdays,
                                              "calendar": every_day}
        finals = frozenset(leaf for leaf in tree.leaves if tree.is_final(leaf))

        def leaves(states: tuple[str, ...]) -> frozenset[str]:
            return frozenset(lf for s in states for lf in tree.leaves_under(s))

        self.deadlines: list[_Deadline] = []
        for name, d in spec.deadlines.items():
            dur = Duration.parse(d.within)
            cal = self._by_unit[dur.unit]
            self.deadlines.append(_Deadline(
                name, d, dur.seconds, cal,
                leaves((d.state,)) if d.state else None,
                leaves(d.stop) | finals, leaves(d.pause_in)))
        self.cycles = [
            _Cycle(name, c.every, leaves(c.while_in), c.while_in[0])
            for name, c in spec.cycles.items() if c.every is not None
        ]
        self.active = bool(self.deadlines or self.cycles)

    def after(self, start: datetime, duration: str) -> datetime:
        """``start`` plus a duration of the definition, on the calendar its unit names
        (``10d``: days of the workflow's calendar; ``10 workdays``; ``10 calendar days``)."""
        dur = Duration.parse(duration)
        return instant_after(self._by_unit[dur.unit], start, dur.seconds)[0]

    # -- commands --------------------------------------------------------
    def on_command(self, clocks: dict[str, Any], *, case_id: str, old_state: str | None,
                   new_state: str, trigger: str, changes: dict[str, Any], now: datetime) -> TimerPlan:
        """Bring ``clocks`` (mutated) up to date with a command; return the timer changes."""
        plan = TimerPlan()
        for d in self.deadlines:
            self._deadline(d, clocks, plan, case_id, old_state, new_state, trigger, changes, now)
        for c in self.cycles:
            was_in = old_state in c.leaves
            is_in = new_state in c.leaves
            if is_in and not was_in:
                plan.insert.append(NewTimer(case_id, self.workflow, "cycle", c.name, c.state,
                                            self.after(now, c.every), {"cycle": c.name}))
            elif was_in and not is_in:
                plan.cancel.add(c.name)
        return plan

    def _deadline(self, d: _Deadline, clocks: dict[str, Any], plan: TimerPlan, case_id: str,
                  old: str | None, new: str, trigger: str, changes: dict[str, Any],
                  now: datetime) -> None:
        c = clocks.get(d.name)
        active = c is not None and c["status"] in ("running", "paused")
        if active:
            assert c is not None
            leaving = (new not in d.scope) if d.scope is not None else (new in d.stop)
            if leaving:
                self._stop(d, c, now)
                plan.cancel.add(d.name)
                return
            ext = d.spec.extend
            if ext is not None and trigger == ext.trigger and changes.get(ext.days_field):
                days = float(changes[ext.days_field])
                c["total"] += days * DAY
                c["extended_days"] = c.get("extended_days", 0) + days
                if c["status"] == "running":
                    plan.cancel.add(d.name)
                    self._schedule(d, c, plan, case_id, now)
        else:
            starts = (old not in d.scope and new in d.scope) if d.scope is not None else (
                trigger == d.spec.start and new not in d.stop)
            if not starts:
                return
            c = {"status": "running", "start": _iso(now), "total": d.total, "elapsed": 0.0,
                 "since": _iso(now), "due": None, "breaches": 0}
            clocks[d.name] = c
            if new in d.pause:
                c["status"], c["since"] = "paused", None
            else:
                self._schedule(d, c, plan, case_id, now)
            return
        if c["status"] == "running" and new in d.pause:
            elapsed, _ = business_seconds(d.calendar, _dt(c["since"]), now)
            c["elapsed"] += elapsed
            if c.get("next_rung_due"):  # overdue: keep the time left until the next rung
                c["rung_left"], _ = business_seconds(d.calendar, now, _dt(c["next_rung_due"]))
            c["status"], c["since"], c["due"] = "paused", None, None
            c["paused_at"] = _iso(now)
            plan.cancel.add(d.name)
        elif c["status"] == "paused" and new not in d.pause:
            c["status"], c["since"] = "running", _iso(now)
            c.pop("paused_at", None)
            self._schedule(d, c, plan, case_id, now)

    def _stop(self, d: _Deadline, c: dict[str, Any], now: datetime) -> None:
        if c["status"] == "running":
            elapsed, _ = business_seconds(d.calendar, _dt(c["since"]), now)
            c["elapsed"] += elapsed
        c["status"], c["since"] = "stopped", None
        c["stopped_at"] = _iso(now)
        c["actual_elapsed"] = (now - _dt(c["start"])).total_seconds()
        c["met"] = c.get("breaches", 0) == 0

    def _schedule(self, d: _Deadline, c: dict[str, Any], plan: TimerPlan, case_id: str,
                  now: datetime) -> None:
        """Timers for a running clock: its warnings still ahead and its breach (or, for a
        clock already breached and still overdue, the next rung of the ladder)."""
        since = _dt(c["since"])
        ran, _ = business_seconds(d.calendar, since, now) if now > since else (0.0, False)
        elapsed_now = c["elapsed"] + ran
        remaining = c["total"] - c["elapsed"]
        state = d.spec.state
        if remaining - ran <= 0 and c.get("breaches"):
            self._schedule_next_rung(d, c, plan, case_id, now)
            return
        due, prov = instant_after(d.calendar, since, max(remaining, 0.0))
        c["due"] = _iso(due)
        c.pop("rung_left", None)
        c.pop("next_rung_due", None)
        instants: list[tuple[datetime, str, dict[str, Any]]] = []
        for share in d.spec.warn:
            at_elapsed = share * c["total"]
            if at_elapsed <= elapsed_now:  # its moment has passed (it fired, or it is moot)
                continue
            when, p = instant_after(d.calendar, since, at_elapsed - c["elapsed"])
            earlier = self._earlier(d, c, since, share)
            if earlier is not None:
                when = earlier
            prov |= p
            instants.append((when, "warning", {"deadline": d.name, "share": share,
                                               "due": _iso(due)}))
        instants.append((due, "breach", {"deadline": d.name, "due": _iso(due),
                                         "rung_due": _iso(due)}))
        plan.insert.append(chained(case_id, self.workflow, d.name, state, instants))
        if prov:
            c["provisional"] = True
            plan.notes.setdefault("provisional_deadlines", []).append(d.name)

    def _schedule_next_rung(self, d: _Deadline, c: dict[str, Any], plan: TimerPlan, case_id: str,
                            now: datetime) -> None:
        """An overdue clock resumed or rescheduled: the next rung after the time it had left."""
        if "rung_left" in c:
            when, _ = instant_after(d.calendar, now, c.pop("rung_left"))
        elif c.get("next_rung_due"):
            when = max(_dt(c["next_rung_due"]), now)
        else:
            return  # the top of the ladder, or no repeat: nothing more to schedule
        c["next_rung_due"] = _iso(when)
        due = c.get("due") or c.get("breached_due") or _iso(when)
        plan.insert.append(NewTimer(case_id, self.workflow, "breach", d.name, d.spec.state, when,
                                    {"deadline": d.name, "due": due, "rung_due": _iso(when)}))

    def _earlier(self, d: _Deadline, c: dict[str, Any], since: datetime,
                 share: float) -> datetime | None:
        """The warning instant moved earlier when it falls inside a sensitive period."""
        for period in self.sensitive:
            at_elapsed = share * period.warn_factor * c["total"]
            if at_elapsed <= c["elapsed"]:
                continue
            when, _ = instant_after(d.calendar, since, at_elapsed - c["elapsed"])
            if period.contains(when.astimezone(d.calendar.tz).date()):
                return when
        return None

    def recompute(self, clocks: dict[str, Any], *, case_id: str, now: datetime) -> TimerPlan:
        """Reschedule every running clock (after a calendar update or a migration)."""
        plan = TimerPlan()
        for d in self.deadlines:
            c = clocks.get(d.name)
            if c is not None and c["status"] == "running":
                c.pop("provisional", None)
                plan.cancel.add(d.name)
                self._schedule(d, c, plan, case_id, now)
        return plan

    def adopt(self, old: dict[str, Any], *, case_id: str, state: str,
              now: datetime) -> tuple[dict[str, Any], TimerPlan]:
        """Clocks and timers for a case migrated to this version while in ``state``.

        A clock of the same name keeps its start and elapsed time but takes this version's
        allowed time (plus any extension it had); a state deadline whose state holds the
        case and that had no clock starts now; cycles of the state start now. The caller
        cancels every timer the case had before.
        """
        clocks: dict[str, Any] = {}
        plan = TimerPlan()
        for d in self.deadlines:
            c = dict(old[d.name]) if d.name in old else None
            if c is not None and c["status"] in ("running", "paused"):
                c["total"] = d.total + c.get("extended_days", 0) * DAY
                if c["status"] == "running" and state in d.pause:
                    elapsed, _ = business_seconds(d.calendar, _dt(c["since"]), now)
                    c["elapsed"] += elapsed
                    c["status"], c["since"], c["due"] = "paused", None, None
                elif c["status"] == "paused" and state not in d.pause:
                    c["status"], c["since"] = "running", _iso(now)
                clocks[d.name] = c
                if c["status"] == "running":
                    self._schedule(d, c, plan, case_id, now)
            elif c is not None:
                clocks[d.name] = c  # a stopped clock stays as history
            elif d.scope is not None and state in d.scope:
                c = {"status": "running", "start": _iso(now), "total": d.total, "elapsed": 0.0,
                     "since": _iso(now), "due": None, "breaches": 0}
                clocks[d.name] = c
                self._schedule(d, c, plan, case_id, now)
        for cy in self.cycles:
            if state in cy.leaves:
                plan.insert.append(NewTimer(case_id, self.workflow, "cycle", cy.name, cy.state,
                                            self.after(now, cy.every), {"cycle": cy.name}))
        return clocks, plan

    def in_sensitive_period(self, when: datetime) -> bool:
        day = when.astimezone(self.calendar.tz).date()
        return any(p.contains(day) for p in self.sensitive)

