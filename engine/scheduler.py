"""The scheduler: firing due timers, exactly once, and the APScheduler wiring.

:func:`run_due` claims due timers in batches (oldest first; ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, the write lock on SQLite), each claim with an
owner and a lease, so several processes share the work and a claim left by a
process that died is taken over once its lease has run out. Each timer then
fires in its own transaction, and the event it writes carries an idempotency key
made of what the timer is (:func:`timer_key`: case, kind, deadline or cycle, due
instant), not of its row id, so keys stay unique when cases move between databases:
a crash between two timers loses nothing and repeats nothing.

:class:`SchedulerService` runs :func:`run_due` from APScheduler: on an
interval, and at the instants of the workflows' cron cycles.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from loguru import logger

from .clock import from_db, to_db
from .errors import StoreError
from .log import case_logger
from .persistence import DuplicateKey, NewTimer, TimerRecord
from .persistence.tx import WriteTx
from .timers import successor

if TYPE_CHECKING:
    from .engine import Engine
    from .machine import CompiledWorkflow


def timer_key(timer: TimerRecord) -> str:
    """The idempotency key of the event a case timer writes: the same timer, whichever
    database holds it, makes the same key; two different timers never do."""
    share = timer.payload.get("share", "")
    return (f"timer:{timer.case_id}:{timer.kind}:{timer.name}:{share}:"
            f"{timer.due_at.isoformat(timespec='microseconds')}")


def check_key(workflow: str, cycle: str, due: datetime, case_id: str) -> str:
    """The idempotency key of the event a cron check writes on one case."""
    return f"cron:{workflow}:{cycle}:{due.isoformat(timespec='microseconds')}:{case_id}"


def default_owner() -> str:
    """Who claims timers: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RunResult:
    """What one :func:`run_due` call did."""

    fired: int = 0
    skipped: int = 0
    failed: int = 0
    batches: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    stopped_early: bool = False


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


def ensure_cron_timers(engine: Engine, now: datetime) -> int:
    """Make sure each cron cycle of each loaded workflow has its next firing stored."""
    wanted = [(wf, name) for wf in engine._latest.values()
              for name, c in wf.spec.cycles.items() if c.cron is not None]
    if not wanted:
        return 0
    with engine._store_call(), engine.store.read() as rtx:
        missing = [(wf, name) for wf, name in wanted if not rtx.pending_cron(wf.name, name)]
    added = 0
    for wf, name in missing:
        due = next_firing(wf, name, now)
        if due is None:
            continue  # the cycle has no firing left (its window is over)
        try:
            with engine._store_call(), engine.store.write() as tx:
                if tx.pending_cron(wf.name, name):
                    continue  # another process added it meanwhile
                tx.insert_timers([NewTimer(None, wf.name, "cron", name, None, to_db(due),
                                           {"cycle": name, "version": wf.version})], to_db(now))
                added += 1
        except DuplicateKey:
            continue  # another process stored it at the same moment (the unique index)
    return added


def run_due(engine: Engine, now: datetime, *, batch_size: int = 200, owner: str | None = None,
            lease: timedelta = timedelta(seconds=60), limit: int | None = None,
            stop: threading.Event | None = None) -> RunResult:
    """Fire every timer due at ``now``: in batches, each timer in its own transaction."""
    owner = owner or default_owner()
    result = RunResult()
    ensure_cron_timers(engine, now)
    while limit is None or result.fired + result.skipped < limit:
        if stop is not None and stop.is_set():
            result.stopped_early = True
            break
        size = batch_size if limit is None else min(batch_size, limit - result.fired - result.skipped)
        with engine._store_call(), engine.store.write() as tx:
            batch = tx.claim_due(to_db(now), owner, to_db(now + lease), size)
        if not batch:
            break
        result.batches += 1
        # The batch in hand is finished even when asked to stop. A timer that creates a
        # follow-up already due (the next rung, the next cycle) ahead of the rest of the batch
        # gives the rest back, so everything fires in due order.
        for n, (timer_id, _) in enumerate(batch):
            try:
                kind, new_due = _fire_one(engine, timer_id, owner, now)
            except StoreError:
                raise  # the database is gone: the claims lapse and another run takes over
            except Exception as e:  # a timer that cannot fire must not block the ones after it
                _set_aside(engine, timer_id, now, e)
                result.failed += 1
                continue
            if kind is None:
                result.skipped += 1
            else:
                result.fired += 1
                result.by_kind[kind] += 1
            rest = batch[n + 1:]
            if rest and new_due is not None and new_due <= to_db(now) and new_due < rest[0][1]:
                with engine._store_call(), engine.store.write() as tx:
                    tx.release_claims([i for i, _ in rest], owner)
                break
    engine.deliver_notices()
    return result


def _set_aside(engine: Engine, timer_id: int, now: datetime, error: Exception) -> None:
    """Mark a timer that raised as ``failed`` (it is not claimed again) and log why. A
    deadline's instants chained after it are set aside with it: they would meet the same
    fault; ``run.py recompute-deadlines --all`` schedules the deadline anew once mended."""
    with engine._store_call(), engine.store.write() as tx:
        case_id = tx.timer_case(timer_id)
        tx.finish_timer(timer_id, "failed", to_db(now))
    logger.bind(case_id=case_id or "-", workflow="-").error(
        "timer {} could not fire and was set aside: {}: {}", timer_id, type(error).__name__, error)


def _fire_one(engine: Engine, timer_id: int, owner: str,
              now: datetime) -> tuple[str | None, datetime | None]:
    """Fire one claimed timer in its own transaction: its kind (None if it was no longer
    ours to fire) and the earliest due time of the follow-up timers it created."""
    try:
        with engine._store_call(), engine.store.write() as tx:
            # Lock the case before its timer, in the order commands take them (a command
            # locks its case, then cancels or adds the case's timers): no deadlock.
            case_id = tx.timer_case(timer_id)
            if case_id is not None:
                tx.lock_case(case_id)
            got = tx.lock_timer(timer_id)
            if got is None:
                return None, None
            timer, claimed_by = got
            if timer.status != "pending" or claimed_by != owner:
                return None, None  # fired, cancelled, or taken over by another process
            tx.finish_timer(timer.id, "fired", to_db(now))  # first: a cron stores its next
            if timer.case_id is None:
                _fire_cron(engine, tx, timer, now)
            else:
                _fire_case_timer(engine, tx, timer, now)
            return timer.kind, tx.earliest_new_due
    except DuplicateKey:
        # Its event is already written, so it fired before: make sure it is marked so, and
        # that the instants chained after it go on (a copy imported without its successor).
        with engine._store_call(), engine.store.write() as tx:
            case_id = tx.timer_case(timer_id)
            if case_id is not None:
                tx.lock_case(case_id)
            got = tx.lock_timer(timer_id)
            tx.finish_timer(timer_id, "fired", to_db(now))
            after = successor(got[0]) if got is not None and got[0].status == "pending" else None
            if after is not None:
                tx.insert_timers([after], to_db(now))
            return None, tx.earliest_new_due


def _fire_case_timer(engine: Engine, tx: WriteTx, timer: TimerRecord, now: datetime) -> None:
    assert timer.case_id is not None
    rec = tx.lock_case(timer.case_id)
    if rec is None:
        return
    wf = engine._compiled(rec.workflow, rec.version)
    log = case_logger(rec.id, wf.name, rec.data, wf.pii)
    key = timer_key(timer)
    due = from_db(timer.due_at)
    details: dict[str, Any] = {"timer": timer.id, "due": due.isoformat()}
    follow: list[NewTimer] = []
    notice = timer.kind
    if timer.kind == "warning":
        details.update(deadline=timer.name, share=timer.payload.get("share"),
                       deadline_due=timer.payload.get("due"))
        kind, name, notice = "warning", f"{timer.name}_warning", "warned"
        log.info("deadline {} at {:.0%} of its time (due {})", timer.name,
                 timer.payload.get("share", 0), timer.payload.get("due"))
    elif timer.kind == "breach":
        kind, name, notice = _breach(wf, rec, timer, due, now, details, follow)
        log.warning("deadline {} breached; escalation level {}", timer.name, rec.escalation_level)
    elif timer.kind == "cycle":
        follow.append(NewTimer(rec.id, wf.name, "cycle", timer.name, timer.state,
                               wf.timing.after(due, wf.spec.cycles[timer.name].every or "0d"),
                               dict(timer.payload)))
        details.update(cycle=timer.name)
        kind, name, notice = "cycle", timer.name, "cycle"
        log.info("cycle {} came round", timer.name)
    else:
        raise ValueError(f"timer {timer.id} has unknown kind {timer.kind!r}")
    after = successor(timer)
    if after is not None:  # the deadline's next instant (its next warning, or its breach)
        follow.append(after)
    _append_system_event(tx, rec, kind, name, details, now, key)
    if follow:
        for t in follow:
            t.due_at = to_db(t.due_at)
        tx.insert_timers(follow, to_db(now))
    tx.add_outbox(notice, to_db(now), case_id=rec.id, seq=rec.last_seq)


def _breach(wf: CompiledWorkflow, rec: Any, timer: TimerRecord, due: datetime, now: datetime,
            details: dict[str, Any], follow: list[NewTimer]) -> tuple[str, str, str]:
    """One rung up the ladder; the next rung's timer if the deadline says to repeat."""
    spec = wf.spec.deadlines[timer.name]
    clock = rec.clocks.setdefault(timer.name, {})
    clock["breaches"] = clock.get("breaches", 0) + 1
    deadline_due = datetime.fromisoformat(timer.payload.get("due", due.isoformat()))
    if rec.overdue_since is None:
        rec.overdue_since = to_db(deadline_due)
    ladder = wf.spec.escalation
    details.update(deadline=timer.name, deadline_due=deadline_due.isoformat(),
                   overdue_seconds=max(0.0, (now - deadline_due).total_seconds()),
                   overdue_days=round(max(0.0, (now - deadline_due).total_seconds()) / 86400, 2))
    clock["breached_due"] = deadline_due.isoformat()
    clock.pop("next_rung_due", None)
    if spec.breach.escalate and ladder and rec.escalation_level < len(ladder):
        rec.escalation_level += 1
        rung = ladder[rec.escalation_level - 1]
        details.update(level=rec.escalation_level, rung=rung.name)
        if spec.breach.repeat is not None and rec.escalation_level < len(ladder):
            nxt = wf.timing.after(due, spec.breach.repeat)
            clock["next_rung_due"] = nxt.isoformat()
            follow.append(NewTimer(rec.id, wf.name, "breach", timer.name, timer.state, nxt,
                                   {**timer.payload, "rung_due": nxt.isoformat()}))
        return "escalation", rung.name, "escalated"
    details.update(level=rec.escalation_level)
    return "breach", f"{timer.name}_breached", "escalated" if ladder else "breached"


def _append_system_event(tx: WriteTx, rec: Any, kind: str, name: str, details: dict[str, Any],
                         now: datetime, key: str) -> None:
    """Record an event the scheduler caused on a case, in the timer's transaction."""
    old = rec.row_version
    rec.row_version = old + 1
    rec.updated_at = to_db(now)
    ev = tx.chain_event(rec, kind=kind, name=name, from_state=rec.state, to_state=rec.state,
                        actor="scheduler", role="system", at=to_db(now), changes={},
                        details=details, idempotency_key=key)
    tx.update_case(rec, old)
    tx.insert_event(ev)


def _fire_cron(engine: Engine, tx: WriteTx, timer: TimerRecord, now: datetime) -> None:
    """A cron cycle across all cases: a report, or a check of matching open cases."""
    wf = engine._compiled(timer.workflow)
    c = wf.spec.cycles.get(timer.name)
    if c is None or c.cron is None:
        return  # the cycle is gone from the definition; the timer just ends
    due = from_db(timer.due_at)
    nxt = next_firing(wf, timer.name, due)
    if nxt is not None:
        tx.insert_timers([NewTimer(None, wf.name, "cron", timer.name, None, to_db(nxt),
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
        _append_system_event(tx, rec, "check", timer.name,
                             {"timer": timer.id, "check": c.check, "due": due.isoformat(),
                              "escalation_level": rec.escalation_level},
                             now, key)
        tx.add_outbox("cycle", to_db(now), case_id=rec.id, seq=rec.last_seq)


class SchedulerService:
    """APScheduler in the background: the sweep on an interval and at each cron instant."""

    def __init__(self, engine: Engine, *, interval_seconds: float = 30.0, batch_size: int = 200,
                 lease_seconds: float = 60.0, owner: str | None = None) -> None:
        self.engine = engine
        self.interval = interval_seconds
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self.owner = owner or default_owner()
        self._stop = threading.Event()
        self._sched: BackgroundScheduler | None = None
        self.last: RunResult | None = None

    def sweep(self) -> RunResult:
        result = run_due(self.engine, self.engine.clock.now(), batch_size=self.batch_size,
                         owner=self.owner, lease=self.lease, stop=self._stop)
        self.last = result
        if result.fired:
            logger.bind(case_id="-", workflow="-").info(
                "scheduler fired {} timers ({})", result.fired, dict(result.by_kind))
        return result

    def start(self) -> None:
        """Start sweeping now (catch-up: timers that fell due while no process ran go first)."""
        if self._sched is not None:
            return
        self._stop.clear()
        sched = BackgroundScheduler(timezone=UTC)
        sched.add_job(self.sweep, IntervalTrigger(seconds=self.interval), id="sweep",
                      max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        for wf in self.engine._latest.values():
            for name, c in wf.spec.cycles.items():
                if c.cron is not None:
                    sched.add_job(self.sweep, cron_trigger(c.cron, wf.spec.timezone),
                                  id=f"cron:{wf.name}:{name}", max_instances=1, coalesce=True)
        sched.start()
        self._sched = sched

    def stop(self, wait: bool = True) -> None:
        """Stop: the sweep in progress finishes the batch in hand, then returns."""
        self._stop.set()
        if self._sched is not None:
            self._sched.shutdown(wait=wait)
            self._sched = None
