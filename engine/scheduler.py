"""The scheduler: firing due timers, exactly once, and the APScheduler wiring.

:meth:`Scheduler.run_due` claims due timers in batches (oldest first; ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, the write lock on SQLite), each claim with an owner and
a lease, so several processes share the work and a claim left by a process that died
is taken over once its lease has run out. Each timer then fires in its own
transaction, and the event it writes carries an idempotency key made of what the
timer is (case, kind, deadline or cycle, due instant), not of its row id, so keys
stay unique when cases move between databases: a crash between two timers loses
nothing and repeats nothing. What a timer does to its case is in
:mod:`casework.escalation`; cron cycles across cases in :mod:`casework.cycles`.

:class:`SchedulerService` runs the sweep from APScheduler: on an interval, and at
the instants of the workflows' cron cycles.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from loguru import logger

from .clock import Clock, to_db
from .cycles import cron_trigger, ensure_cron_timers, fire_cron
from .errors import StoreError
from .escalation import append_system_event, fire_case_timer
from .outbox import Outbox, default_owner
from .persistence import DuplicateKey, TimerRecord
from .registry import Registry
from .storage import Storage
from .timers import successor
from .types import EventKind, TimerStatus


@dataclass
class RunResult:
    """What one ``run_due`` call did: timers fired (by kind), skipped (no longer ours to
    fire), failed (set aside), the batches claimed, and whether a stop cut it short."""

    fired: int = 0
    skipped: int = 0
    failed: int = 0
    batches: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    stopped_early: bool = False


class Scheduler:
    """Fires due timers."""

    def __init__(self, storage: Storage, registry: Registry, clock: Clock, outbox: Outbox, *,
                 batch_size: int = 200, lease: timedelta = timedelta(seconds=60)) -> None:
        self._storage = storage
        self._registry = registry
        self.clock = clock
        self._outbox = outbox
        self.batch_size = batch_size
        self.lease = lease

    def ensure_cron_timers(self, now: datetime) -> int:
        """Store the next firing of each loaded cron cycle that has none."""
        return ensure_cron_timers(self._storage, self._registry, now)

    def failed(self, limit: int = 500) -> list[TimerRecord]:
        with self._storage.read() as tx:
            return tx.failed_timers(limit)

    def retry(self, timer_id: int, actor: str) -> bool:
        """Put a failed timer back to fire at the next sweep, with a ``deadline`` event on its
        case saying who did (the retry is part of the history); False if it was not failed."""
        now = self.clock.now()
        with self._storage.write() as tx:
            case_id = tx.timer_case(timer_id)
            rec = tx.lock_case(case_id) if case_id is not None else None
            got = tx.lock_timer(timer_id)
            if got is None or got[0].status != TimerStatus.FAILED.value:
                return False
            tx.retry_timer(timer_id)
            if rec is not None:
                timer = got[0]
                append_system_event(tx, rec, EventKind.DEADLINE, "timer_retried",
                                    {"timer": timer_id, "kind": timer.kind, "name": timer.name,
                                     "by": actor}, now, f"retry:{timer_id}:{now.isoformat()}")
        logger.bind(case_id=case_id or "-", workflow="-").info(
            "failed timer {} put back by {}", timer_id, actor)
        return True

    def cron_jobs(self) -> list[tuple[str, str, str]]:
        """(job id, cron expression, time zone) of every loaded cron cycle."""
        return [(f"cron:{wf.name}:{name}", c.cron, wf.spec.timezone)
                for wf in self._registry.latest() for name, c in wf.spec.cycles.items()
                if c.cron is not None]

    def run_due(self, now: datetime, *, batch_size: int | None = None, owner: str | None = None,
                lease: timedelta | None = None, limit: int | None = None,
                stop: threading.Event | None = None) -> RunResult:
        """Fire every timer due at ``now``: in batches, each timer in its own transaction."""
        owner = owner or default_owner()
        batch_size = batch_size or self.batch_size
        lease = lease or self.lease
        result = RunResult()
        self.ensure_cron_timers(now)
        while limit is None or result.fired + result.skipped < limit:
            if stop is not None and stop.is_set():
                result.stopped_early = True
                break
            size = batch_size if limit is None else min(batch_size, limit - result.fired - result.skipped)
            with self._storage.write() as tx:
                batch = tx.claim_due(to_db(now), owner, to_db(now + lease), size)
            if not batch:
                break
            result.batches += 1
            # The batch in hand is finished even when asked to stop. A timer that creates a
            # follow-up already due (the next rung, the next cycle) ahead of the rest of the batch
            # gives the rest back, so everything fires in due order.
            for n, (timer_id, _) in enumerate(batch):
                try:
                    kind, new_due = self._fire_one(timer_id, owner, now)
                except StoreError:
                    raise  # the database is gone: the claims lapse and another run takes over
                except Exception as e:  # a timer that cannot fire must not block the ones after it
                    self._set_aside(timer_id, now, e)
                    result.failed += 1
                    continue
                if kind is None:
                    result.skipped += 1
                else:
                    result.fired += 1
                    result.by_kind[kind] += 1
                rest = batch[n + 1:]
                if rest and new_due is not None and new_due <= to_db(now) and new_due < rest[0][1]:
                    with self._storage.write() as tx:
                        tx.release_claims([i for i, _ in rest], owner)
                    break
        self._outbox.deliver()
        return result


    def _set_aside(self, timer_id: int, now: datetime, error: Exception) -> None:
        """Mark a timer that raised as ``failed`` (it is not claimed again) and log why. A
        deadline's instants chained after it are set aside with it: they would meet the same
        fault; ``run.py recompute-deadlines --all`` schedules the deadline anew once mended."""
        with self._storage.write() as tx:
            case_id = tx.timer_case(timer_id)
            tx.finish_timer(timer_id, TimerStatus.FAILED.value, to_db(now))
        # The exception's text may quote case data: only its type is logged.
        logger.bind(case_id=case_id or "-", workflow="-").error(
            "timer {} could not fire and was set aside: {}", timer_id, type(error).__name__)


    def _fire_one(self, timer_id: int, owner: str,
                  now: datetime) -> tuple[str | None, datetime | None]:
        """Fire one claimed timer in its own transaction: its kind (None if it was no longer
        ours to fire) and the earliest due time of the follow-up timers it created."""
        try:
            with self._storage.write() as tx:
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
                # first: a cron stores its next
                tx.finish_timer(timer.id, TimerStatus.FIRED.value, to_db(now))
                if timer.case_id is None:
                    fire_cron(self._registry, tx, timer, now)
                else:
                    fire_case_timer(self._registry, tx, timer, now)
                return timer.kind, tx.earliest_new_due
        except DuplicateKey:
            # Its event is already written, so it fired before: make sure it is marked so, and
            # that the instants chained after it go on (a copy imported without its successor).
            with self._storage.write() as tx:
                case_id = tx.timer_case(timer_id)
                if case_id is not None:
                    tx.lock_case(case_id)
                got = tx.lock_timer(timer_id)
                tx.finish_timer(timer_id, TimerStatus.FIRED.value, to_db(now))
                after = successor(got[0]) if got is not None and got[0].status == "pending" else None
                if after is not None:
                    tx.insert_timers([after], to_db(now))
                return None, tx.earliest_new_due


class SchedulerService:
    """APScheduler in the background: the sweep on an interval and at each cron instant."""

    def __init__(self, scheduler: Scheduler, *, interval_seconds: float = 30.0,
                 batch_size: int = 200, lease_seconds: float = 60.0,
                 owner: str | None = None) -> None:
        self.scheduler = scheduler
        self.interval = interval_seconds
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self.owner = owner or default_owner()
        self._stop = threading.Event()
        self._sched: BackgroundScheduler | None = None
        self.last: RunResult | None = None

    def sweep(self) -> RunResult:
        result = self.scheduler.run_due(self.scheduler.clock.now(), batch_size=self.batch_size,
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
        for job_id, cron, tz in self.scheduler.cron_jobs():
            sched.add_job(self.sweep, cron_trigger(cron, tz), id=job_id, max_instances=1,
                          coalesce=True)
        sched.start()
        self._sched = sched

    def stop(self, wait: bool = True) -> None:
        """Stop: the sweep in progress finishes the batch in hand, then returns."""
        self._stop.set()
        if self._sched is not None:
            self._sched.shutdown(wait=wait)
            self._sched = None
