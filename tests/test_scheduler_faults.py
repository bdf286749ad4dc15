"""The scheduler under real process faults: SIGKILL in the middle of a batch, and the
daemon (``run.py serve``) stopped with SIGTERM while it works through a backlog.

Both run real child processes on a SQLite file prepared here with many due timers,
then check that no timer fired twice and none is half-fired.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from casework import Engine, FrozenClock

from tests.conftest import COMPLAINT, PETITION, ROOT
from tests.helpers import naive, sql
from tests.petition_steps import open_petition
from tests.scheduler_steps import T0

# The child's run_due is slowed inside each timer's transaction, so that SIGKILL lands
# mid-transaction and mid-batch: the engine logs what a timer does (a warning, a breach)
# while the timer's transaction is open, and the child's log sink takes its time.
SLOW_CHILD = r"""
import sys
import time
from datetime import datetime

from casework import Engine, FrozenClock, configure_logging

url, workflow, now = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])


def slow_sink(message):
    if "deadline" in message:
        time.sleep(0.004)


engine = Engine(url, [workflow], clock=FrozenClock(now))
configure_logging("INFO", sink=slow_sink)
engine.run_due(batch_size=20, owner="doomed")
print("finished", flush=True)
"""


def _prepare(path: Path, n_cases: int, opened: datetime) -> None:
    """``n_cases`` petition cases opened at ``opened`` (a second apart): 3 triage instants each
    (two warnings and the breach, in one chained timer row)."""
    clock = FrozenClock(opened)
    with Engine(f"sqlite:///{path}", [PETITION, COMPLAINT], clock=clock,
                sqlite_synchronous="OFF") as e:
        for _ in range(n_cases):
            open_petition(e)
            clock.advance(seconds=1)


def _count(path: Path, statement: str, **params: object) -> int:
    [(n,)] = sql(f"sqlite:///{path}", statement, **params)
    return int(n)


def _fired(path: Path) -> int:
    return _count(path, "SELECT count(*) FROM timers WHERE status = 'fired' AND case_id IS NOT NULL")


def _assert_no_timer_half_fired(path: Path) -> tuple[int, int]:
    """Every fired case timer has exactly one event; no event belongs to an unfired timer.

    Returns (fired, pending) case timer instants: a pending row counts once for its own
    instant and once for each instant chained after it (``payload.then``)."""
    url = f"sqlite:///{path}"
    found = sql(url, "SELECT id, status, payload FROM timers WHERE case_id IS NOT NULL")
    timers = {i: s for i, s, _ in found}
    rows = sql(url, "SELECT idempotency_key, json_extract(details, '$.timer') FROM events "
                    "WHERE actor = 'scheduler'")
    keys = Counter(k for k, _ in rows)
    assert [k for k, n in keys.items() if n != 1] == []
    by_timer = Counter(int(t) for _, t in rows)
    assert [t for t, n in by_timer.items() if n != 1] == []
    fired = {i for i, s in timers.items() if s == "fired"}
    assert set(by_timer) == fired, (
        f"fired without an event: {sorted(fired - set(by_timer))[:5]}; "
        f"event without a fired timer: {sorted(set(by_timer) - fired)[:5]}")
    pending = sum(1 + len(json.loads(p).get("then", [])) for _, s, p in found if s == "pending")
    return len(fired), pending


def test_sigkill_in_the_middle_of_a_batch_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    db = tmp_path / "cases.db"
    n_cases = 300
    _prepare(db, n_cases, T0)
    total = 3 * n_cases
    now = T0 + timedelta(days=20)  # every triage warning and breach is due
    script = tmp_path / "child.py"
    script.write_text(SLOW_CHILD, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(script), f"sqlite:///{db}", str(PETITION),
                              now.isoformat()], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None and _fired(db) < 50:
            time.sleep(0.01)
        assert child.poll() is None, f"the child ended early: {child.communicate()}"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    fired_by_child = _fired(db)
    assert 50 <= fired_by_child < total
    _assert_no_timer_half_fired(db)

    with Engine(f"sqlite:///{db}", [PETITION, COMPLAINT], clock=FrozenClock(now)) as engine:
        # At the same instant the dead process's claims still hold their lease (60 s)...
        engine.run_due(batch_size=50, owner="heir")
        held = _count(db, "SELECT count(*) FROM timers WHERE status = 'pending' AND case_id IS NOT NULL"
                          " AND due_at <= :now", now=naive(now))
        assert held <= 20
        assert held == _count(db, "SELECT count(*) FROM timers WHERE status = 'pending' "
                                  "AND claimed_by = 'doomed'")
        # ... and once it has run out, they are taken over.
        later = now + timedelta(seconds=61)
        engine.run_due(now=later, batch_size=50, owner="heir")
        fired, pending = _assert_no_timer_half_fired(db)
        assert (fired, pending) == (total, 0)
        assert _count(db, "SELECT count(*) FROM timers WHERE status = 'pending' "
                          "AND due_at <= :now", now=naive(later)) == 0
        assert engine.verify() == []
    per_case = Counter(c for (c,) in sql(f"sqlite:///{db}",
                                         "SELECT case_id FROM events WHERE actor = 'scheduler'"))
    assert len(per_case) == n_cases and set(per_case.values()) == {3}


def test_the_daemon_stops_on_sigterm_after_the_batch_in_hand_with_nothing_half_fired(
        tmp_path: Path) -> None:
    db = tmp_path / "cases.db"
    n_cases = 4000
    _prepare(db, n_cases, datetime.now(UTC) - timedelta(days=40))
    total = 3 * n_cases
    out, err = (tmp_path / "serve.out").open("wb"), (tmp_path / "serve.err").open("wb")
    env = {**os.environ, "CASEWORK_NO_VENV": "1"}
    daemon = subprocess.Popen([sys.executable, "run.py", "--db", f"sqlite:///{db}", "serve"],
                              cwd=ROOT, env=env, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and daemon.poll() is None and _fired(db) == 0:
            time.sleep(0.01)
        assert daemon.poll() is None, (tmp_path / "serve.err").read_text()[-2000:]
        at_signal = _fired(db)
        assert 0 < at_signal < total
        os.kill(daemon.pid, signal.SIGTERM)
        rc = daemon.wait(timeout=20)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        out.close()
        err.close()
    log = (tmp_path / "serve.err").read_text()
    assert rc == 0, log[-2000:]
    assert "stopping: finishing the batch in hand" in log and log.rstrip().endswith("stopped")
    fired, pending = _assert_no_timer_half_fired(db)
    assert at_signal <= fired < total  # it stopped instead of working through the backlog
    assert fired - at_signal <= 2 * 200  # at most the batch in hand and one begun meanwhile
    assert fired + pending == total
    # No claim is left behind: the batch in hand was finished, no new one was taken.
    assert _count(db, "SELECT count(*) FROM timers WHERE status = 'pending' "
                      "AND claimed_by IS NOT NULL") == 0
