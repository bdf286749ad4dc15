"""Notices in the outbox: claimed before delivery, so several processes deliver each once.

Two engines on one database (each with its own connection pool, as two processes
would have) deliver the same pending notices at the same time, on SQLite and on
PostgreSQL; a claim left by a process that died (killed with SIGKILL while its
subscriber held the notice) lapses with its lease; subscribers slower than a short
lease (``scheduler={"notice_lease_seconds": ...}``) hear each notice once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from casework import Engine, FrozenClock

from tests.conftest import PETITION, ROOT
from tests.helpers import connection, naive, table
from tests.petition_steps import OPEN_DATA

N = 60
LEASE = timedelta(seconds=60)  # the engine's notice lease unless told otherwise


def _pending_warnings(engine: Engine, n: int) -> list[tuple[str, int]]:
    """``n`` cases, each with an undelivered ``warned`` notice about its first event,
    written into the outbox behind the engine's back."""
    ids = [engine.open_case("petition", OPEN_DATA, actor="clerk:li").id for _ in range(n)]
    at = naive(engine.clock.now())
    with connection(engine) as conn:
        conn.execute(table(conn, "outbox").insert(),
                     [{"name": "warned", "case_id": cid, "seq": 1, "created_at": at}
                      for cid in ids])
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


# A process that claims the pending notices and dies while its subscriber holds the first.
DYING_DELIVERER = r"""
import sys
import time
from pathlib import Path

from casework import Engine

url, workflow, ready = sys.argv[1:4]
engine = Engine(url, [workflow])


def hold(notice):
    Path(ready).write_text(notice.case.id, encoding="utf-8")
    time.sleep(300)


engine.on("warned", hold)
engine.deliver_notices()
"""


def test_a_claim_left_by_a_dead_process_is_delivered_after_its_lease(
        db_url: str, tmp_path: Path) -> None:
    heard: list[tuple[str, str, int]] = []
    clock = FrozenClock(datetime.now(UTC))  # the dying process claims on the system clock
    with Engine(db_url, [PETITION], clock=clock) as engine:
        wanted = _pending_warnings(engine, 5)
        ready = tmp_path / "holding"
        child = subprocess.Popen([sys.executable, "-c", DYING_DELIVERER, db_url, str(PETITION),
                                  str(ready)], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert ready.exists(), f"the child claimed nothing: {child.communicate(timeout=10)}"
            os.kill(child.pid, signal.SIGKILL)  # it dies holding the claim
            assert child.wait(timeout=10) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        _listening(engine, heard, "me")
        clock.set(datetime.now(UTC))
        assert engine.deliver_notices() == 0 and heard == []  # the lease still runs
        clock.advance(LEASE + timedelta(seconds=1))
        assert engine.deliver_notices() == 5
        assert sorted((cid, seq) for _, cid, seq in heard) == sorted(wanted)
        assert engine.deliver_notices() == 0


def test_slow_subscribers_do_not_outlast_the_claim(db_url: str) -> None:
    """Subscribers slower than the lease: the delivering process marks what it handed over
    and gives the rest back before its claim lapses, so no notice is heard twice."""
    heard: list[tuple[str, str, int]] = []
    short = {"notice_lease_seconds": 0.4}
    with Engine(db_url, [PETITION], scheduler=short) as a, \
            Engine(db_url, [PETITION], scheduler=short) as b:
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
