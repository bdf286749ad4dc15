"""Cron cycles across all cases: the supervision report and the checks of open cases.

A workflow's cron cycle (``cron: "0 9 1 */3 *"``) keeps one pending timer for its next
firing; when it fires it stores the next one, then builds its report (every unit's open
and overdue cases, handed to subscribers) or records a ``check`` event on each open case
it looks at (all open cases, the overdue ones, or those at risk), optionally only between
two dates or inside the sensitive periods of the settings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from apscheduler.triggers.cron import CronTrigger
from loguru import logger

from .clock import from_db, to_db
from .escalation import append_system_event
from .machine import CompiledWorkflow
from .persistence import DuplicateKey, NewTimer, TimerRecord
from .persistence.tx import WriteTx
from .registry import Registry
from .storage import Storage
from .types import EventKind, TimerKind


def check_key(workflow: str, cycle: str, due: datetime, case_id: str) -> str:
    """The idempotency key of the event a cron check writes on one case."""
    return f"cron:{workflow}:{cycle}:{due.isoformat(timespec='microseconds')}:{case_id}"


def cron_trigger(expr: str, tz: str) -> CronTrigger:
    return CronTrigger.from_crontab(expr, timezone=tz)


def next_cron(expr: str, tz: str, after: datetime) -> datetime:
    """The first instant of cron ``expr`` strictly after ``after`` (aware UTC)."""
    trig = cron_trigger(expr, tz)
    nxt = trig.get_next_fire_time(None, after + timedelta(microseconds=1))
    assert nxt is not None
    return nxt.astimezone(UTC)


def next_firing(wf: CompiledWorkflow, name: str, after: datetime) -> datetime | None:
    """The next instant cron cycle ``name`` should act after ``after``, skipping the days
    outside its ``between`` window or outside sensitive periods; None when none is left."""
    c = wf.spec.cycles[name]
    assert c.cron is not None
    tz = wf.timing.calendar.tz
    when = next_cron(c.cron, wf.spec.timezone, after)
    for _ in range(1000):
        day = when.astimezone(tz).date()
        start: date | None = None
        if c.between is not None:
            lo, hi = date.fromisoformat(c.between[0]), date.fromisoformat(c.between[1])
            if day > hi:
                return None
            if day < lo:
                start = lo
        if start is None and c.sensitive_only and not wf.timing.in_sensitive_period(when):
            ahead = [p.start for p in wf.timing.sensitive if p.start > day]
            if not ahead:
                return None
            start = min(ahead)
        if start is None:
            return when
        midnight = datetime.combine(start, time(0), tz) - timedelta(microseconds=1)
        when = next_cron(c.cron, wf.spec.timezone, midnight.astimezone(UTC))
    return None


def ensure_cron_timers(storage: Storage, registry: Registry, now: datetime) -> int:
    """Make sure each cron cycle of each loaded workflow has its next firing stored."""
    wanted = [(wf, name) for wf in registry.latest()
              for name, c in wf.spec.cycles.items() if c.cron is not None]
    if not wanted:
        return 0
    with storage.read() as rtx:
        missing = [(wf, name) for wf, name in wanted if not rtx.pending_cron(wf.name, name)]
    added = 0
    for wf, name in missing:
        due = next_firing(wf, name, now)
        if due is None:
            continue  # the cycle has no firing left (its window is over)
        try:
            with storage.write() as tx:
                if tx.pending_cron(wf.name, name):
                    continue  # another process added it meanwhile
                tx.insert_timers([NewTimer(None, wf.name, TimerKind.CRON.value, name, None, to_db(due),
                                           {"cycle": name, "version": wf.version})], to_db(now))
                added += 1
        except DuplicateKey:
            continue  # another process stored it at the same moment (the unique index)
    return added


def fire_cron(registry: Registry, tx: WriteTx, timer: TimerRecord, now: datetime) -> None:
    """A cron cycle across all cases: a report, or a check of matching open cases."""
    wf = registry.get(timer.workflow)
    c = wf.spec.cycles.get(timer.name)
    if c is None or c.cron is None:
        return  # the cycle is gone from the definition; the timer just ends
    due = from_db(timer.due_at)
    nxt = next_firing(wf, timer.name, due)
    if nxt is not None:
        tx.insert_timers([NewTimer(None, wf.name, TimerKind.CRON.value, timer.name, None, to_db(nxt),
                                   dict(timer.payload))], to_db(now))
    if c.report is not None:
        rows = tx.open_by_field(wf.name, "unit")
        payload = {"cycle": timer.name, "due": due.isoformat(), "by": "unit",
                   "rows": [{"unit": u, "open": n, "overdue": o} for u, n, o in rows],
                   "open": sum(n for _, n, _ in rows), "overdue": sum(o for _, _, o in rows)}
        rid = tx.insert_report(wf.name, c.report, to_db(now), timer.id, payload)
        tx.add_outbox("report", to_db(now), report_id=rid)
        logger.bind(case_id="-", workflow=wf.name).info(
            "{} report: {} open, {} overdue", c.report, payload["open"], payload["overdue"])
        return
    assert c.check is not None
    for case_id in tx.open_case_ids(wf.name, c.check):
        key = check_key(wf.name, timer.name, timer.due_at, case_id)
        if tx.event_by_key(key) is not None:
            continue  # this case was checked at this instant already (e.g. in another database)
        rec = tx.lock_case(case_id)
        if rec is None:
            continue
        append_system_event(tx, rec, EventKind.CHECK, timer.name,
                             {"timer": timer.id, "check": c.check, "due": due.isoformat(),
                              "escalation_level": rec.escalation_level},
                             now, key)
        tx.add_outbox("cycle", to_db(now), case_id=rec.id, seq=rec.last_seq)


