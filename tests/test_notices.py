"""Notices in the outbox: claimed before delivery, so several processes deliver each once.

Two engines on one database (each with its own connection pool, as two processes
would have) deliver the same pending notices at the same time, on SQLite and on
PostgreSQL; a claim left by a process that died lapses with its lease.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import casework.engine as engine_module
import pytest
from casework import Engine, FrozenClock
from casework.clock import to_db
from casework.engine import NOTICE_LEASE

from tests.conftest import PETITION
from tests.petition_steps import OPEN_DATA

N = 60


def _pending_warnings(engine: Engine, n: int) -> list[tuple[str, int]]:
    """``n`` cases, each with an undelivered ``warned`` notice about its first event."""
    ids = [engine.open_case("petition", OPEN_DATA, actor="clerk:li").id for _ in range(n)]
    at = to_db(engine.clock.now())
    with engine.store.write() as tx:
        for cid in ids:
            tx.add_outbox("warned", at, case_id=cid, seq=1)
    return [(cid, 1) for cid in ids]


def _listening(engine: Engine, heard: list[tuple[str, str, int]], who: str) -> None:
    lock = threading.Lock()

    def hear(notice: Any) -> None:
        with lock:
            heard.append((who, notice.case.id, notice.event.seq))
    engine.on("warned", hear)


def test_two_processes_delivering_at_once_hand_each_notice_over_once(
        db_url: str, clock: FrozenClock) -> None:
    heard: list[tuple[str, str, int]] = []
    with Engine(db_url, [PETITION], clock=clock) as a, Engine(db_url, [PETITION], clock=clock) as b:
        wanted = _pending_warnings(a, N)
        _listening(a, heard, "a")
        _listening(b, heard, "b")
        start = threading.Barrier(2)
        counts: dict[str, int] = {}

        def deliver(name: str, engine: Engine) -> None:
            start.wait()
            counts[name] = sum(engine.deliver_notices(limit=7) for _ in range(3))

        threads = [threading.Thread(target=deliver, args=(n, e)) for n, e in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        once = Counter((cid, seq) for _, cid, seq in heard)
        assert sorted(once) == sorted(wanted) and set(once.values()) == {1}
        assert counts["a"] + counts["b"] == N
        assert a.deliver_notices() == 0 and b.deliver_notices() == 0


def test_a_claim_left_by_a_dead_process_is_delivered_after_its_lease(
        db_url: str, clock: FrozenClock) -> None:
    heard: list[tuple[str, str, int]] = []
    with Engine(db_url, [PETITION], clock=clock) as engine:
        wanted = _pending_warnings(engine, 5)
        now = to_db(clock.now())
        with engine.store.write() as tx:  # a process claims them, then dies
            assert len(tx.claim_outbox(now, "gone:1", now + NOTICE_LEASE, 100)) == 5
        _listening(engine, heard, "me")
        assert engine.deliver_notices() == 0 and heard == []
        clock.advance(NOTICE_LEASE + timedelta(seconds=1))
        assert engine.deliver_notices() == 5
        assert sorted((cid, seq) for _, cid, seq in heard) == sorted(wanted)
        assert engine.deliver_notices() == 0


def test_slow_subscribers_do_not_outlast_the_claim(db_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Subscribers slower than the lease: the delivering process marks what it handed over
    and gives the rest back before its claim lapses, so no notice is heard twice."""
    monkeypatch.setattr(engine_module, "NOTICE_LEASE", timedelta(seconds=0.4))
    heard: list[tuple[str, str, int]] = []
    with Engine(db_url, [PETITION]) as a, Engine(db_url, [PETITION]) as b:
        wanted = _pending_warnings(a, 16)
        for name, e in (("a", a), ("b", b)):
            _listening(e, heard, name)
            e.on("warned", lambda _notice: time.sleep(0.06))
        start = threading.Barrier(2)

        def deliver(engine: Engine) -> None:
            start.wait()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(heard) < len(wanted):
                engine.deliver_notices()
                time.sleep(0.05)

        threads = [threading.Thread(target=deliver, args=(e,)) for e in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        once = Counter((cid, seq) for _, cid, seq in heard)
        assert sorted(once) == sorted(wanted) and set(once.values()) == {1}
