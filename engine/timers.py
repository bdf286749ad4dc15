"""SLA clocks and windows: deadlines that start, pause, resume, move and stop with the case.

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

A deadline counted ``statutory`` ends where the law's count ends (the start day not
counted, the last day ending at 24:00 or the closing time, moved off a day of rest);
its allowed time is the business time from its start to that instant, so warnings at
a share of it fall at that share of the time to the end. A clock keeps the calendar,
the counting and the calendar data it was started with; recomputing uses them.

A window (e.g. 30 days to ask for a review) opens when its trigger is applied or at a
field's instant, and closes after its period, counted the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import Any

from .calendars import (
    DAY,
    Calendar,
    Calendars,
    ChinaWorkdays,
    DeclaredYear,
    Duration,
    business_seconds,
    calendar_data,
    instant_after,
    snap_to_day_end,
    statutory_end,
    statutory_last_day,
)
from .clock import to_db
from .definition import Counting, DeadlineSpec, WindowSpec, WorkflowSpec
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
    statutory_days: int | None  # counted as the law counts days (None: an exact duration)


@dataclass(frozen=True)
class _Window:
    name: str
    spec: WindowSpec
    duration: Duration
    calendar: Calendar
    statutory: bool


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
    """The deadlines, windows and per-case cycles of one workflow version."""

    def __init__(self, spec: WorkflowSpec, tree: StateTree, *, calendar: str | None = None,
                 strict_calendar: bool = False,
                 sensitive: tuple[SensitivePeriod, ...] = (),
                 declared: Mapping[int, DeclaredYear] | None = None,
                 closing: time | None = None) -> None:
        self.workflow = spec.workflow
        self.tree = tree
        self.sensitive = sensitive
        self.calendars = Calendars(calendar or spec.calendar, spec.timezone,
                                   strict=strict_calendar, declared=declared, closing=closing)
        self.calendar = self.calendars.default
        finals = frozenset(leaf for leaf in tree.leaves if tree.is_final(leaf))

        def leaves(states: tuple[str, ...]) -> frozenset[str]:
            return frozenset(lf for s in states for lf in tree.leaves_under(s))

        def statutory(counting: Counting | None, dur: Duration) -> bool:
            return (counting or spec.counting) is Counting.STATUTORY and dur.days is not None

        self.deadlines: list[_Deadline] = []
        for name, d in spec.deadlines.items():
            dur = Duration.parse(d.within)
            self.deadlines.append(_Deadline(
                name, d, dur.seconds, self.calendars.for_unit(dur.unit),
                leaves((d.state,)) if d.state else None,
                leaves(d.stop) | finals, leaves(d.pause_in),
                dur.days if statutory(d.counting, dur) else None))
        self.windows: dict[str, _Window] = {}
        for name, ws in spec.windows.items():
            dur = Duration.parse(ws.within)
            self.windows[name] = _Window(name, ws, dur, self.calendars.for_unit(dur.unit),
                                         statutory(ws.counting, dur))
        self._opened_by: dict[str, list[_Window]] = {}
        for win in self.windows.values():
            if win.spec.opens_on is not None:
                self._opened_by.setdefault(win.spec.opens_on, []).append(win)
        self.cycles = [
            _Cycle(name, c.every, leaves(c.while_in), c.while_in[0])
            for name, c in spec.cycles.items() if c.every is not None
        ]
        self.active = bool(self.deadlines or self.cycles or self._opened_by)

    def after(self, start: datetime, duration: str) -> datetime:
        """``start`` plus a duration of the definition, on the calendar its unit names
        (``10d``: days of the workflow's calendar; ``10 workdays``; ``10 calendar days``)."""
        dur = Duration.parse(duration)
        return instant_after(self.calendars.for_unit(dur.unit), start, dur.seconds)[0]

    def _cal(self, d: _Deadline, c: Mapping[str, Any]) -> Calendar:
        """The calendar a clock was started on (older clocks: the deadline's)."""
        name = c.get("calendar")
        return self.calendars.by_name.get(name or "", d.calendar)

    # -- windows ---------------------------------------------------------
    def _window_end(self, w: _Window, opened: datetime) -> tuple[datetime, bool]:
        if w.statutory:
            assert w.duration.days is not None
            last, p1 = statutory_last_day(w.calendar, opened, w.duration.days)
            end, p2 = statutory_end(w.calendar, self.calendars.official, last,
                                    self.calendars.closing)
            return end, p1 or p2
        return instant_after(w.calendar, opened, w.duration.seconds)

    def window(self, name: str, data: Mapping[str, Any],
               clocks: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
        """When window ``name`` opened and when it closes (None: it has not opened)."""
        w = self.windows[name]
        if w.spec.from_field is not None:
            raw = data.get(w.spec.from_field)
            if raw in (None, ""):
                return None
            opened = _instant(raw, self.calendars.tz)
            return opened, self._window_end(w, opened)[0]
        found = (clocks.get("_windows") or {}).get(name)
        if not found:
            return None
        return _dt(found["opened"]), _dt(found["closes"])

    def opens_windows(self, trigger: str) -> bool:
        """Whether applying ``trigger`` opens a window."""
        return trigger in self._opened_by

    def _open_windows(self, clocks: dict[str, Any], trigger: str, now: datetime) -> None:
        for w in self._opened_by.get(trigger, ()):
            closes, provisional = self._window_end(w, now)
            entry: dict[str, Any] = {"opened": _iso(now), "closes": _iso(closes)}
            if provisional:
                entry["provisional"] = True
            clocks.setdefault("_windows", {})[w.name] = entry

    # -- commands --------------------------------------------------------
    def on_command(self, clocks: dict[str, Any], *, case_id: str, old_state: str | None,
                   new_state: str, trigger: str, changes: dict[str, Any], now: datetime) -> TimerPlan:
        """Bring ``clocks`` (mutated) up to date with a command; return the timer changes."""
        plan = TimerPlan()
        for d in self.deadlines:
            self._deadline(d, clocks, plan, case_id, old_state, new_state, trigger, changes, now)
        if trigger in self._opened_by:
            self._open_windows(clocks, trigger, now)
        for c in self.cycles:
            was_in = old_state in c.leaves
            is_in = new_state in c.leaves
            if is_in and not was_in:
                plan.insert.append(NewTimer(case_id, self.workflow, "cycle", c.name, c.state,
                                            self.after(now, c.every), {"cycle": c.name}))
            elif was_in and not is_in:
                plan.cancel.add(c.name)
        return plan

    def _new_clock(self, d: _Deadline, now: datetime, plan: TimerPlan) -> dict[str, Any]:
        cal = d.calendar
        c: dict[str, Any] = {"status": "running", "start": _iso(now), "total": d.total,
                             "elapsed": 0.0, "since": _iso(now), "due": None, "breaches": 0,
                             "calendar": cal.name, "calendar_data": calendar_data(cal),
                             "counting": "statutory" if d.statutory_days is not None else "exact"}
        if d.statutory_days is not None:
            c["days"] = d.statutory_days
            last, p1 = statutory_last_day(cal, now, d.statutory_days)
            self._set_end(d, c, cal, last, now, p1, plan)
            c["total"], _ = business_seconds(cal, now, _dt(c["end"]))
        return c

    def _set_end(self, d: _Deadline, c: dict[str, Any], cal: Calendar, last: date,
                 since: datetime, provisional: bool, plan: TimerPlan) -> None:
        """A statutory clock's end from its last day, and its allowed time to it."""
        end, p2 = statutory_end(cal, self.calendars.official, last, self.calendars.closing)
        c["last_day"] = last.isoformat()
        c["end"] = _iso(end)
        if provisional or p2:
            c["provisional"] = True
            plan.notes.setdefault("provisional_deadlines", []).append(d.name)

    def _deadline(self, d: _Deadline, clocks: dict[str, Any], plan: TimerPlan, case_id: str,
                  old: str | None, new: str, trigger: str, changes: dict[str, Any],
                  now: datetime) -> None:
        c = clocks.get(d.name)
        active = c is not None and c["status"] in ("running", "paused")
        if active:
            assert c is not None
            cal = self._cal(d, c)
            leaving = (new not in d.scope) if d.scope is not None else (new in d.stop)
            if leaving:
                self._stop(d, c, now)
                plan.cancel.add(d.name)
                return
            ext = d.spec.extend
            if ext is not None and trigger == ext.trigger and changes.get(ext.days_field):
                days = float(changes[ext.days_field])
                c["extended_days"] = c.get("extended_days", 0) + days
                if c.get("last_day") and float(days).is_integer():
                    old_end = _dt(c["end"])
                    c["days"] = int(c.get("days", d.statutory_days or 0)) + int(days)
                    last, prov = statutory_last_day(cal, _dt(c["start"]), c["days"])
                    self._set_end(d, c, cal, last, now, prov, plan)
                    added, _ = business_seconds(cal, old_end, _dt(c["end"]))
                    c["total"] += added
                else:
                    c["total"] += days * DAY
                if c["status"] == "running":
                    plan.cancel.add(d.name)
                    self._schedule(d, c, plan, case_id, now)
        else:
            starts = (old not in d.scope and new in d.scope) if d.scope is not None else (
                trigger == d.spec.start and new not in d.stop)
            if not starts:
                return
            c = self._new_clock(d, now, plan)
            clocks[d.name] = c
            if new in d.pause:
                c["status"], c["since"] = "paused", None
                c["paused"] = [[_iso(now), None]]
            else:
                self._schedule(d, c, plan, case_id, now)
            return
        cal = self._cal(d, c)
        if c["status"] == "running" and new in d.pause:
            elapsed, _ = business_seconds(cal, _dt(c["since"]), now)
            c["elapsed"] += elapsed
            if c.get("next_rung_due"):  # overdue: keep the time left until the next rung
                c["rung_left"], _ = business_seconds(cal, now, _dt(c["next_rung_due"]))
            c["status"], c["since"], c["due"] = "paused", None, None
            c["paused_at"] = _iso(now)
            c.setdefault("paused", []).append([_iso(now), None])
            plan.cancel.add(d.name)
        elif c["status"] == "paused" and new not in d.pause:
            c["status"], c["since"] = "running", _iso(now)
            c.pop("paused_at", None)
            c["resumed"] = True
            stretches = c.setdefault("paused", [])
            if stretches and stretches[-1][1] is None:
                stretches[-1][1] = _iso(now)
            self._schedule(d, c, plan, case_id, now)

    def _stop(self, d: _Deadline, c: dict[str, Any], now: datetime) -> None:
        if c["status"] == "running":
            elapsed, _ = business_seconds(self._cal(d, c), _dt(c["since"]), now)
            c["elapsed"] += elapsed
        stretches = c.get("paused") or []
        if stretches and stretches[-1][1] is None:
            stretches[-1][1] = _iso(now)
        c["status"], c["since"] = "stopped", None
        c["stopped_at"] = _iso(now)
        c["actual_elapsed"] = (now - _dt(c["start"])).total_seconds()
        c["met"] = c.get("breaches", 0) == 0

    def _schedule(self, d: _Deadline, c: dict[str, Any], plan: TimerPlan, case_id: str,
                  now: datetime) -> None:
        """Timers for a running clock: its warnings still ahead and its breach (or, for a
        clock already breached and still overdue, the next rung of the ladder)."""
        cal = self._cal(d, c)
        since = _dt(c["since"])
        ran, _ = business_seconds(cal, since, now) if now > since else (0.0, False)
        elapsed_now = c["elapsed"] + ran
        remaining = c["total"] - c["elapsed"]
        state = d.spec.state
        if remaining - ran <= 0 and c.get("breaches"):
            self._schedule_next_rung(d, c, plan, case_id, now)
            return
        if c.get("end") and not c.get("resumed") and not c["elapsed"]:
            due, prov = _dt(c["end"]), bool(c.get("provisional"))
        else:
            due, prov = instant_after(cal, since, max(remaining, 0.0))
            if c.get("counting") == "statutory":  # whole days: to the end of the day it falls in
                due, p2 = snap_to_day_end(cal, self.calendars.official, due,
                                          self.calendars.closing)
                prov |= p2
        c["due"] = _iso(due)
        c.pop("rung_left", None)
        c.pop("next_rung_due", None)
        instants: list[tuple[datetime, str, dict[str, Any]]] = []
        for share in d.spec.warn:
            at_elapsed = share * c["total"]
            if at_elapsed <= elapsed_now:  # its moment has passed (it fired, or it is moot)
                continue
            when, p = instant_after(cal, since, at_elapsed - c["elapsed"])
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
            notes = plan.notes.setdefault("provisional_deadlines", [])
            if d.name not in notes:
                notes.append(d.name)
        if isinstance(cal, ChinaWorkdays):
            years = cal.declared_in(since, due)
            if years:
                c["declared_years"] = years
                plan.notes.setdefault("counted_on_declared_calendar", {})[d.name] = years

    def _schedule_next_rung(self, d: _Deadline, c: dict[str, Any], plan: TimerPlan, case_id: str,
                            now: datetime) -> None:
        """An overdue clock resumed or rescheduled: the next rung after the time it had left."""
        if "rung_left" in c:
            when, _ = instant_after(self._cal(d, c), now, c.pop("rung_left"))
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
        cal = self._cal(d, c)
        for period in self.sensitive:
            at_elapsed = share * period.warn_factor * c["total"]
            if at_elapsed <= c["elapsed"]:
                continue
            when, _ = instant_after(cal, since, at_elapsed - c["elapsed"])
            if period.contains(when.astimezone(cal.tz).date()):
                return when
        return None

    def recompute(self, clocks: dict[str, Any], *, case_id: str, now: datetime,
                  adopt_calendar: bool = False) -> TimerPlan:
        """Reschedule every running clock (after its calendar's data changed, e.g. a new
        year's holidays), each on the calendar it was started with; ``adopt_calendar``
        moves the clocks onto the workflow's calendar of today (a recorded migration)."""
        plan = TimerPlan()
        for d in self.deadlines:
            c = clocks.get(d.name)
            if c is None or c["status"] not in ("running", "paused"):
                continue
            if adopt_calendar and c.get("calendar") != d.calendar.name:
                plan.notes.setdefault("calendar_changed", {})[d.name] = {
                    "from": c.get("calendar"), "to": d.calendar.name}
                c["calendar"] = d.calendar.name
            cal = self._cal(d, c)
            c.pop("provisional", None)
            c.pop("declared_years", None)
            c["calendar_data"] = calendar_data(cal)
            if c.get("last_day"):
                old_end = _dt(c["end"])
                days = int(c.get("days", d.statutory_days or 0))
                last, prov = statutory_last_day(cal, _dt(c["start"]), days)
                self._set_end(d, c, cal, last, now, prov, plan)
                new_end = _dt(c["end"])
                delta, _ = (business_seconds(cal, old_end, new_end) if new_end >= old_end
                            else business_seconds(cal, new_end, old_end))
                c["total"] += delta if new_end >= old_end else -delta
            if c["status"] == "running":
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
        clocks: dict[str, Any] = {k: v for k, v in old.items() if k == "_windows"}
        plan = TimerPlan()
        for d in self.deadlines:
            c = dict(old[d.name]) if d.name in old else None
            if c is not None and c["status"] in ("running", "paused"):
                if not c.get("last_day"):
                    c["total"] = d.total + c.get("extended_days", 0) * DAY
                cal = self._cal(d, c)
                if c["status"] == "running" and state in d.pause:
                    elapsed, _ = business_seconds(cal, _dt(c["since"]), now)
                    c["elapsed"] += elapsed
                    c["status"], c["since"], c["due"] = "paused", None, None
                    c.setdefault("paused", []).append([_iso(now), None])
                elif c["status"] == "paused" and state not in d.pause:
                    c["status"], c["since"] = "running", _iso(now)
                    c["resumed"] = True
                clocks[d.name] = c
                if c["status"] == "running":
                    self._schedule(d, c, plan, case_id, now)
            elif c is not None:
                clocks[d.name] = c  # a stopped clock stays as history
            elif d.scope is not None and state in d.scope:
                c = self._new_clock(d, now, plan)
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

    def clocks_view(self, clocks: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
        """Each deadline's clock as a host shows it: status, due, both elapsed times (business
        and actual, in seconds), the time left, and the stretches it was paused."""
        out: list[dict[str, Any]] = []
        for d in self.deadlines:
            c = clocks.get(d.name)
            if c is None:
                continue
            cal = self._cal(d, c)
            business = c.get("elapsed", 0.0)
            if c["status"] == "running" and c.get("since"):
                business += business_seconds(cal, _dt(c["since"]), now)[0]
            end = _dt(c["stopped_at"]) if c.get("stopped_at") else now
            due = _dt(c["due"]) if c.get("due") else None
            out.append({
                "name": d.name, "status": c["status"], "counting": c.get("counting", "exact"),
                "calendar": cal.name, "calendar_data": c.get("calendar_data"),
                "started": _dt(c["start"]), "due": due,
                "business_elapsed": business,
                "actual_elapsed": (end - _dt(c["start"])).total_seconds(),
                "time_left": (due - now).total_seconds() if due is not None and c["status"] == "running"
                else None,
                "allowed": c.get("total"), "breaches": c.get("breaches", 0),
                "provisional": bool(c.get("provisional")),
                "paused": [(_dt(a), _dt(b) if b else None) for a, b in c.get("paused") or []],
            })
        return out


def _instant(raw: Any, tz: Any) -> datetime:
    """A field's date or datetime as an aware instant (a date: its midnight locally; a naive
    datetime: UTC, as the engine stores)."""
    if isinstance(raw, datetime):
        d = raw
    elif isinstance(raw, date):
        return datetime.combine(raw, time(0), tz)
    else:
        text = str(raw)
        if "T" not in text and " " not in text:
            return datetime.combine(date.fromisoformat(text), time(0), tz)
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)
