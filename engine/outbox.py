"""The outbox: notices written with their event, handed to subscribers after commit.

A notice the scheduler causes (a warning, an escalation, a cycle, a report) is written
in the transaction of its event; :meth:`Outbox.deliver` hands it to the subscribers
afterwards. Notices are claimed before delivery (an owner and a lease, like due timers),
so with several processes each notice goes to one of them; one claimed by a process that
died goes out again after the lease: at least once, never lost.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import timedelta

from loguru import logger

from .clock import Clock, from_db, to_db
from .convert import case_of, event_of
from .events import OUTBOX_NOTICES, Notice, ReportReady, Subscribers
from .persistence.tx import ReadTx
from .storage import Storage

# How long a process may take to hand claimed notices to its subscribers before another
# process may deliver them again.
NOTICE_LEASE = timedelta(seconds=60)


def default_owner() -> str:
    """Who claims timers and notices: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Outbox:
    """Delivers the stored notices to this process's subscribers."""

    def __init__(self, storage: Storage, subscribers: Subscribers, clock: Clock, *,
                 lease: timedelta = NOTICE_LEASE) -> None:
        self._storage = storage
        self._subscribers = subscribers
        self._clock = clock
        self.lease = lease
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- delivery in the background --------------------------------------------
    def start_background(self, interval: float = 0.5) -> None:
        """Deliver from a thread of its own: when poked after a commit, and every
        ``interval`` seconds (notices of other processes, retries)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval)
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    self.deliver()
                except Exception:  # the database is gone for now: try again later
                    logger.bind(case_id="-", workflow="-").warning(
                        "notices not delivered yet; trying again")
                    self._stop.wait(interval)

        self._thread = threading.Thread(target=loop, name="casework-notices", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Something was written to the outbox: deliver soon."""
        self._wake.set()

    def stop_background(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout=30)

    def deliver(self, limit: int = 500) -> int:
        """Hand the undelivered notices to the subscribers; how many were handed over."""
        delivered = 0
        owner = default_owner()
        while True:
            now = to_db(self._clock.now())
            with self._storage.read() as rtx:
                if not rtx.pending_outbox(now, 1):
                    return delivered  # nothing to do: no write lock taken
            with self._storage.write() as tx:
                claimed = tx.claim_outbox(now, owner, now + self.lease, limit)
            if not claimed:
                return delivered  # other processes hold what is pending
            notices: list[tuple[int, Notice | ReportReady | None]] = []
            with self._storage.read() as rtx:
                for oid, name, case_id, seq, report_id in claimed:
                    wanted = self._subscribers.wants("report" if report_id else
                                                     OUTBOX_NOTICES.get(name, Notice).name)
                    notices.append((oid, _notice(rtx, name, case_id, seq, report_id)
                                    if wanted else None))
            # Slow subscribers must not outlast the claim: past half the lease, what is
            # delivered is marked and the rest given back, to be claimed anew.
            started = time.monotonic()
            done: list[int] = []
            kept: list[int] = []  # a durable subscriber refused them: handed over again later
            handled = 0
            for oid, notice in notices:
                if time.monotonic() - started > self.lease.total_seconds() / 2:
                    break
                handled += 1
                if notice is not None and not self._subscribers.publish(notice):
                    kept.append(oid)
                    continue
                done.append(oid)
            rest = [oid for oid, _ in notices[handled:]]
            with self._storage.write() as tx:
                at = to_db(self._clock.now())
                for oid in done:
                    tx.mark_delivered(oid, at)
                tx.release_outbox(rest, owner)
            delivered += len(done)
            if kept:
                return delivered  # their claim lapses after the lease; then they go again
            if not rest and len(claimed) < limit:
                return delivered


def _notice(tx: ReadTx, name: str, case_id: str | None, seq: int | None,
            report_id: int | None) -> Notice | ReportReady | None:
    if report_id is not None:
        got = tx.report(report_id)
        if got is None:
            return None
        rid, workflow, report, at, payload = got
        return ReportReady(rid, workflow, report, from_db(at), payload)
    if case_id is None or seq is None:
        return None
    rec = tx.get_case(case_id)
    ev = tx.event_at(case_id, seq)
    if rec is None or ev is None:
        return None
    return OUTBOX_NOTICES.get(name, Notice)(case_of(rec), event_of(ev))
