"""Group commit: the commands of one process wait for the database's write lock in one lane,
in arrival order, and those waiting at the same moment commit in one transaction, each in a
savepoint of its own.

The lane is the store's (``casework.persistence.store``). SQLite groups commands by default;
PostgreSQL runs each command in a transaction of its own (``bench/RESULTS.md`` says why), so
the lane's own tests run there with grouping switched on (``store.group_commit``), as the
benchmark measures it. A test holds the lane to make a group form: with
``store.lane.turn()`` (a transaction of its own, which the lane never groups), or, through
the engine, with a named guard that waits inside the first command of the group.
"""

from __future__ import annotations

import contextvars
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from casework import (
    ConflictError,
    Engine,
    GuardContext,
    GuardRefused,
    MissingFields,
    RoleRefused,
    StoreError,
    WrongState,
)
from casework.persistence import CaseRecord, DatabaseUnavailable, DuplicateKey, Store
from casework.persistence.store import NestedWrite, StoreClosed
from casework.persistence.tx import WriteTx

from tests.conftest import PETITION, ROOT, assert_figures_intact
from tests.petition_steps import (
    ARCHIVIST,
    CLERK,
    FOUR_FIXES,
    HANDLER,
    LEADER,
    OPEN_DATA,
    STANDARD,
    TRIAGE,
)

AT = datetime(2026, 1, 5, 9, 0)
WAIT = 10.0  # the bound of every wait for another thread or process


def _until(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


class Call(threading.Thread):
    """``fn()`` on a thread of its own; its result or its exception, once joined."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.took = 0.0

    def run(self) -> None:
        t = time.monotonic()
        try:
            self.result = self.fn()
        except BaseException as e:
            self.error = e
        self.took = time.monotonic() - t

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the call did not return"
        return self.error if self.error is not None else self.result


def _queue(store: Store, fns: list[Callable[[], Any]]) -> list[Call]:
    """Start one thread per ``fn`` while the lane is held, each once the one before it is
    waiting, so they stand in the lane in this order."""
    calls = []
    for fn in fns:
        before = store.lane.waiting()
        c = Call(fn)
        c.start()
        _until(lambda b=before: store.lane.waiting() > b, "a write to wait in the lane")
        calls.append(c)
    return calls


# -- the lane of a store ------------------------------------------------------------------------

@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url, busy_timeout_ms=2_000, group_ms=1_000)  # groups as the test forms them
    s.prepare_schema()
    s.group_commit = True  # PostgreSQL: the lane as the benchmark measures it there
    yield s
    s.dispose()


def _add(name: str) -> Callable[[WriteTx], str]:
    """A command that stores a workflow version named ``name``."""
    def work(tx: WriteTx) -> str:
        tx.save_workflow_version(name, "v1", "{}", "test", AT)
        return name
    return work


def _stored(store: Store, *names: str) -> dict[str, bool]:
    with store.read() as tx:
        return {n: tx.workflow_definition(n, "v1") is not None for n in names}


def _submit(store: Store, work: Callable[[WriteTx], Any]) -> Callable[[], Any]:
    return lambda: store.submit(work)


def test_a_command_alone_runs_at_once_in_a_group_of_one(store: Store) -> None:
    before = (store.lane.groups, store.lane.commands)
    assert store.submit(_add("a")) == "a"
    assert (store.lane.groups, store.lane.commands) == (before[0] + 1, before[1] + 1)
    assert _stored(store, "a") == {"a": True}


def test_commands_waiting_together_commit_in_one_group_each_with_its_own_result(
        store: Store) -> None:
    names = [f"wf{i}" for i in range(6)]
    with store.lane.turn():
        calls = _queue(store, [_submit(store, _add(n)) for n in names])
        groups = store.lane.groups
    assert [c.outcome() for c in calls] == names
    assert store.lane.groups == groups + 1 and store.lane.largest >= len(names)
    assert all(_stored(store, *names).values())


class Refused(Exception):
    pass


def test_a_command_that_raises_inside_a_group_rolls_back_alone_with_its_own_error(
        store: Store) -> None:
    raised = Refused("no")

    def refuse(tx: WriteTx) -> None:
        tx.save_workflow_version("refused", "v1", "{}", "test", AT)  # written, then undone
        raise raised

    with store.lane.turn():
        calls = _queue(store, [_submit(store, _add("first")), _submit(store, refuse),
                               _submit(store, _add("after"))])
        groups = store.lane.groups
    assert [c.outcome() for c in calls] == ["first", raised, "after"]
    assert store.lane.groups == groups + 1
    assert _stored(store, "first", "refused", "after") == {"first": True, "refused": False,
                                                           "after": True}


def test_the_first_command_of_a_group_refused_leaves_the_rest_of_the_group_applied(
        store: Store) -> None:
    def refuse(tx: WriteTx) -> None:
        tx.save_workflow_version("refused", "v1", "{}", "test", AT)
        raise Refused("no")

    with store.lane.turn():
        calls = _queue(store, [_submit(store, refuse), _submit(store, _add("b")),
                               _submit(store, _add("c"))])
    outcomes = [c.outcome() for c in calls]
    assert isinstance(outcomes[0], Refused) and outcomes[1:] == ["b", "c"]
    assert _stored(store, "refused", "b", "c") == {"refused": False, "b": True, "c": True}


def _case(cid: str) -> CaseRecord:
    return CaseRecord(cid, "petition", "v", "registered", False, {}, 0, AT, AT, 1, 0, "")


def test_a_duplicate_key_in_one_savepoint_is_that_commands_alone(store: Store) -> None:
    store.submit(lambda tx: tx.insert_case(_case("c" * 32)))

    def again(tx: WriteTx) -> None:
        tx.save_workflow_version("dup", "v1", "{}", "test", AT)
        tx.insert_case(_case("c" * 32))  # the unique index refuses it

    with store.lane.turn():
        calls = _queue(store, [_submit(store, _add("x")), _submit(store, again),
                               _submit(store, _add("y"))])
    outcomes = [c.outcome() for c in calls]
    assert outcomes[0] == "x" and outcomes[2] == "y"
    assert isinstance(outcomes[1], DuplicateKey)
    assert _stored(store, "x", "dup", "y") == {"x": True, "dup": False, "y": True}


def test_a_transaction_killed_inside_a_group_fails_each_command_not_committed(
        store: Store) -> None:
    def kill(tx: WriteTx) -> str:
        tx.cur.execute("ROLLBACK")  # what a database error that ends the transaction does
        return "killed"

    with store.lane.turn():
        calls = _queue(store, [_submit(store, _add("before")), _submit(store, kill),
                               _submit(store, _add("later"))])
    before, killed, later = (c.outcome() for c in calls)
    assert isinstance(before, DatabaseUnavailable) and isinstance(killed, DatabaseUnavailable)
    assert later == "later"  # not taken into the failed group: it ran in the next one
    assert _stored(store, "before", "later") == {"before": False, "later": True}
    assert store.submit(_add("fine")) == "fine"  # the lane goes on


def test_a_base_exception_in_a_command_run_by_another_thread_is_its_own(store: Store) -> None:
    def leave(tx: WriteTx) -> None:
        raise SystemExit(3)

    with store.lane.turn():
        calls = _queue(store, [_submit(store, _add("p")), _submit(store, leave),
                               _submit(store, _add("q"))])
    p, left, q = (c.outcome() for c in calls)
    assert (p, q) == ("p", "q") and isinstance(left, SystemExit)
    assert _stored(store, "p", "q") == {"p": True, "q": True}


def test_a_command_runs_under_its_callers_context_variables(store: Store) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")

    def seen(tx: WriteTx) -> str:
        return var.get()

    def caller(name: str) -> Callable[[], str]:
        def call() -> str:
            var.set(name)
            return store.submit(seen)
        return call

    with store.lane.turn():
        calls = _queue(store, [caller("r1"), caller("r2"), caller("r3")])
    assert [c.outcome() for c in calls] == ["r1", "r2", "r3"]


def test_a_write_waiting_past_the_busy_timeout_gives_up_and_never_runs(db_url: str) -> None:
    s = Store(db_url, busy_timeout_ms=200)
    s.prepare_schema()
    s.group_commit = True
    try:
        with s.lane.turn():
            call = Call(_submit(s, _add("late")))
            call.start()
            error = call.outcome()
        assert isinstance(error, DatabaseUnavailable) and 0.15 < call.took < 5
        assert s.lane.waiting() == 0 and _stored(s, "late") == {"late": False}
    finally:
        s.dispose()


def test_closing_refuses_the_waiting_writes_and_does_not_hang(db_url: str) -> None:
    s = Store(db_url, busy_timeout_ms=300)
    s.prepare_schema()
    s.group_commit = True
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with s.lane.turn():
            held.set()
            release.wait(WAIT)

    holder = Call(hold)
    holder.start()
    assert held.wait(WAIT)
    calls = _queue(s, [_submit(s, _add(f"q{i}")) for i in range(3)])
    t = time.monotonic()
    s.dispose()  # the holder keeps the lane past the wait bound: dispose returns anyway
    took = time.monotonic() - t
    release.set()
    holder.outcome()
    assert all(isinstance(c.outcome(), StoreClosed) for c in calls)
    assert took < 3
    assert s.submit(_add("after")) == "after"  # a closed store opens again on use
    assert _stored(s, "q0", "q1", "q2", "after") == {"q0": False, "q1": False, "q2": False,
                                                    "after": True}
    s.dispose()


def test_a_write_inside_a_command_on_sqlite_is_refused_at_once(sqlite_url: str) -> None:
    s = Store(sqlite_url)
    s.prepare_schema()
    try:
        def nested(tx: WriteTx) -> None:
            with s.write():
                pass

        t = time.monotonic()
        with pytest.raises(NestedWrite):
            s.submit(nested)
        with pytest.raises(NestedWrite), s.write():
            s.submit(_add("inner"))
        assert time.monotonic() - t < 1  # not after the busy timeout
        assert s.submit(_add("fine")) == "fine"
    finally:
        s.dispose()


# -- through the engine -------------------------------------------------------------------------

HOLD_WORKFLOW = """\
workflow: holdcase
title: A case whose transition waits on a named guard
roles: [worker]
initial: open
states:
  open: {description: open}
  held: {description: held}
  done: {final: true, description: done}
transitions:
  - trigger: hold_it
    source: open
    dest: held
    roles: [worker]
    conditions: [hold]
  - trigger: finish
    source: [open, held]
    dest: done
    roles: [worker]
"""


class Holder:
    """A named guard that makes its command wait inside the lane until released: the
    commands sent meanwhile wait behind it and join its group."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, ctx: GuardContext) -> bool:
        self.entered.set()
        return self.release.wait(WAIT)


def _engine(url: str, tmp_path: Path, holder: Holder, **kw: Any) -> Engine:
    wf = tmp_path / "holdcase.yaml"
    wf.write_text(HOLD_WORKFLOW, encoding="utf-8")
    e = Engine(url, [PETITION, wf], guards={"hold": holder}, key_file=tmp_path / "k.key", **kw)
    store = e._storage.store
    store.group_commit = True  # PostgreSQL: the lane as the benchmark measures it
    store.lane.max_seconds = 1.0  # the group takes every command the test queued
    return e


def _lane(engine: Engine) -> Any:
    return engine._storage.store.lane


def _in(engine: Engine, *steps: str) -> str:
    case = engine.open_case("petition", OPEN_DATA, actor=CLERK)
    for s in steps:
        cmd = STANDARD[s]
        engine.fire(case.id, cmd.trigger, actor=cmd.actor, data=dict(cmd.data))
    return case.id


def _held(engine: Engine, holder: Holder) -> Call:
    """A command that holds the lane from inside its guard (the group's first)."""
    cid = engine.open_case("holdcase", {}, actor="worker:w").id
    call = Call(lambda: engine.fire(cid, "hold_it", actor="worker:w"))
    call.start()
    assert holder.entered.wait(WAIT)
    return call


def test_a_refused_command_inside_a_group_leaves_the_others_applied_with_its_own_refusal(
        db_url: str, tmp_path: Path) -> None:
    holder = Holder()
    with _engine(db_url, tmp_path, holder) as engine:
        registered, accepted, other = _in(engine), _in(engine, "accept"), _in(engine)
        stale = engine.get_case(accepted).row_version - 1
        keyed = engine.fire(other, "accept", actor=TRIAGE, idempotency_key="acc-1")
        lane = _lane(engine)
        first = _held(engine, holder)
        groups = lane.groups
        calls = _queue(engine._storage.store, [
            lambda: engine.fire(registered, "accept", actor=TRIAGE),             # applied
            lambda: engine.fire(registered, "archive", actor=ARCHIVIST),         # wrong state
            lambda: engine.fire(accepted, "assign", actor=HANDLER, data=FOUR_FIXES),  # role
            lambda: engine.fire(accepted, "assign", actor=LEADER, data={}),      # missing fields
            lambda: engine.fire(accepted, "thought_work", actor=HANDLER,
                                data={"notes": "n"}, expected_version=stale),    # conflict
            lambda: engine.fire(other, "accept", actor=TRIAGE, idempotency_key="acc-1"),  # replay
            lambda: engine.fire(accepted, "assign", actor=LEADER, data=FOUR_FIXES),  # applied
        ])
        holder.release.set()
        assert first.outcome().state == "held"
        out = [c.outcome() for c in calls]
        assert lane.groups == groups + 1, "the commands did not commit in one group"
        assert out[0].state == "accepted" and out[6].state == "handling.investigating"
        assert isinstance(out[1], WrongState) and out[1].case_id == registered
        assert isinstance(out[2], RoleRefused) and out[2].case_id == accepted
        assert isinstance(out[3], MissingFields) and out[3].case_id == accepted
        assert isinstance(out[4], ConflictError) and out[4].case_id == accepted
        assert (out[5].id, out[5].row_version) == (keyed.id, keyed.row_version)
        assert [e.name for e in engine.history(registered)] == ["open", "accept"]
        assert [e.name for e in engine.history(accepted)] == ["open", "accept", "assign"]
        assert [e.name for e in engine.history(other)] == ["open", "accept"]
        assert engine.verify() == []
        assert_figures_intact(engine)  # the refused commands added nothing to the figures


def test_many_threads_on_one_engine_lose_no_update(db_url: str, tmp_path: Path) -> None:
    threads, rounds = 8, 12
    with Engine(db_url, [PETITION], key_file=tmp_path / "k.key") as engine:
        shared = [_in(engine, "accept", "assign") for _ in range(2)]  # every thread writes on these too
        done: Counter[str] = Counter()
        conflicts = [0]
        lock = threading.Lock()
        start = threading.Barrier(threads)
        lat: list[float] = []

        def worker(n: int) -> None:
            start.wait(WAIT)
            for i in range(rounds):
                t = time.perf_counter()
                cid = _in(engine)
                for trig, actor, data in (("accept", TRIAGE, {}), ("assign", LEADER, FOUR_FIXES)):
                    engine.fire(cid, trig, actor=actor, data=data)
                case = shared[i % 2]
                while True:  # an optimistic update: read, then write at the version read
                    version = engine.get_case(case).row_version
                    try:
                        engine.fire(case, "thought_work", actor=HANDLER, expected_version=version,
                                    data={"notes": f"t{n} r{i}"})
                        break
                    except ConflictError:
                        with lock:
                            conflicts[0] += 1
                with lock:
                    done[case] += 1
                    done[cid] += 3
                    lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        calls = [Call(lambda n=n: worker(n)) for n in range(threads)]
        for c in calls:
            c.start()
        outcomes = [c.outcome() for c in calls]
        assert all(o is None for o in outcomes), outcomes
        seconds = time.perf_counter() - t0
        commands = threads * rounds * 4
        for case in shared:
            history = engine.history(case)
            assert len(history) == 3 + done[case] == engine.get_case(case).row_version
            notes = [e.details["notes"] for e in history if e.name == "thought_work"]
            assert len(set(notes)) == len(notes) == threads * rounds // 2
        assert sum(v for k, v in done.items() if k not in shared) == threads * rounds * 3
        assert engine.verify() == []
        assert_figures_intact(engine)
        lane = _lane(engine)
        print(f"\n{engine.backend}: {threads} threads, {commands} commands in {seconds:.2f} s "
              f"({commands / seconds:.0f}/s), {conflicts[0]} conflicts retried; lane groups "
              f"{lane.groups}, largest {lane.largest}")


def test_closing_the_engine_gives_each_waiting_command_an_error_and_returns(
        sqlite_url: str, tmp_path: Path) -> None:
    holder = Holder()
    engine = _engine(sqlite_url, tmp_path, holder, busy_timeout_ms=300)
    cases = [_in(engine) for _ in range(3)]
    first = _held(engine, holder)
    calls = _queue(engine._storage.store,
                   [lambda c=c: engine.fire(c, "accept", actor=TRIAGE) for c in cases])
    t = time.monotonic()
    engine.close()
    took = time.monotonic() - t
    holder.release.set()
    assert first.outcome().state == "held"  # the command in hand finishes
    for c in calls:
        error = c.outcome()
        assert isinstance(error, StoreError) and "closed" in str(error)
    assert took < 3
    with Engine(sqlite_url, [PETITION], key_file=tmp_path / "k.key") as again:
        assert [again.get_case(c).state for c in cases] == ["registered"] * 3
        assert again.verify() == []


def test_a_subscriber_that_fires_again_runs_after_its_commit_from_many_threads(
        db_url: str, tmp_path: Path) -> None:
    with Engine(db_url, [PETITION], key_file=tmp_path / "k.key") as engine:
        engine.on("opened", lambda n: engine.fire(n.case.id, "accept", actor=TRIAGE))
        calls = [Call(lambda: [engine.open_case("petition", OPEN_DATA, actor=CLERK).id
                               for _ in range(5)]) for _ in range(6)]
        for c in calls:
            c.start()
        ids = [cid for c in calls for cid in c.outcome()]
        assert len(ids) == 30
        assert {engine.get_case(cid).state for cid in ids} == {"accepted"}
        assert engine.verify() == []


def test_a_guard_that_fires_a_command_inside_its_own_is_refused_at_once_on_sqlite(
        sqlite_url: str, tmp_path: Path) -> None:
    other: list[str] = []

    def meddle(ctx: GuardContext) -> bool:
        engine.fire(other[0], "accept", actor=TRIAGE)  # a write inside the command's own
        return True

    wf = tmp_path / "holdcase.yaml"
    wf.write_text(HOLD_WORKFLOW, encoding="utf-8")
    with Engine(sqlite_url, [PETITION, wf], guards={"hold": meddle},
                key_file=tmp_path / "k.key") as engine:
        other.append(_in(engine))
        cid = engine.open_case("holdcase", {}, actor="worker:w").id
        t = time.monotonic()
        with pytest.raises(GuardRefused, match="StoreError"):
            engine.fire(cid, "hold_it", actor="worker:w")
        assert time.monotonic() - t < 1  # refused at once, not after the busy timeout
        assert engine.get_case(cid).state == "open"
        assert engine.get_case(other[0]).state == "registered"


# -- SIGKILL during group commits ---------------------------------------------------------------

CHILD_THREADS = 8


def _child_main() -> None:
    """A child process: ``CHILD_THREADS`` threads driving petitions on one engine; one line
    on stdout for each command that returned (``ack``) or was refused (``refused``)."""
    db, key = sys.argv[1], sys.argv[2]
    engine = Engine(f"sqlite:///{db}", [PETITION], key_file=key)
    out = sys.stdout.fileno()
    steps = [STANDARD[s] for s in ("accept", "assign", "decide", "reply", "visit_satisfied",
                                   "archive")]

    def say(line: str) -> None:
        os.write(out, (line + "\n").encode())  # one write per line: lines never interleave

    def worker(n: int) -> None:
        i = 0
        while True:
            i += 1
            case = engine.open_case("petition", OPEN_DATA, actor=CLERK,
                                    idempotency_key=f"{os.getpid()}-{n}-{i}")
            say(f"ack {case.id} {case.row_version} open")
            for k, cmd in enumerate(steps):
                if k == 2:
                    try:
                        engine.fire(case.id, "archive", actor=ARCHIVIST)
                    except WrongState:
                        say(f"refused {case.id} archive")
                case = engine.fire(case.id, cmd.trigger, actor=cmd.actor, data=dict(cmd.data))
                say(f"ack {case.id} {case.row_version} {cmd.trigger}")

    for n in range(CHILD_THREADS):
        threading.Thread(target=worker, args=(n,), daemon=True).start()
    lane = engine._storage.store.lane
    while True:  # how the lane grouped the commands so far
        time.sleep(0.02)
        say(f"groups {lane.groups} {lane.commands} {lane.largest}")


Acks = list[tuple[str, int, str]]


def _run_child(db: Path, key: Path, rng: random.Random) -> tuple[Acks, int, tuple[int, ...]]:
    """Start a child, kill it with SIGKILL at a random instant after it started writing;
    the commands it acknowledged, how many refusals it reported, and the last figures of
    its lane (groups, commands, largest group)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tests.test_group_commit import _child_main; _child_main()",
         str(db), str(key)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    kill_at: float | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                break
            assert now < deadline, "the child did not start writing"
            ready, _, _ = select.select([fd], [], [], (kill_at or deadline) - now)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"the child ended early (status {proc.poll()})"
                buf += chunk
                if kill_at is None and b"\nack " in b"\n" + buf:  # writing: kill it soon
                    kill_at = time.monotonic() + rng.uniform(0.0, 0.4)
        proc.send_signal(signal.SIGKILL)
        while True:  # what it wrote before it died is still in the pipe
            ready, _, _ = select.select([fd], [], [], WAIT)
            assert ready, "the pipe stayed open after the kill"
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    finally:
        proc.kill()
        proc.wait(WAIT)
        proc.stdout.close()
    acks: Acks = []
    refusals, lane = 0, (0, 0, 0)
    for line in buf.decode().split("\n")[:-1]:  # the last one may be cut short by the kill
        parts = line.split()
        if parts[0] == "ack":
            acks.append((parts[1], int(parts[2]), parts[3]))
        elif parts[0] == "refused":
            refusals += 1
        elif parts[0] == "groups":
            lane = (int(parts[1]), int(parts[2]), int(parts[3]))
    return acks, refusals, lane


def test_sigkill_during_group_commits_loses_no_acknowledged_command(tmp_path: Path) -> None:
    db, key = tmp_path / "cases.db", tmp_path / "cases.key"
    rng = random.Random(14)
    kills = 12
    acked: Acks = []
    refused, largest = 0, 0
    with Engine(f"sqlite:///{db}", [PETITION], key_file=key) as engine:
        t0 = time.monotonic()
        for _ in range(kills):
            got, refusals, lane = _run_child(db, key, rng)
            acked += got
            refused += refusals
            largest = max(largest, lane[2])
            assert time.monotonic() - t0 < 50, "the kills took too long"
        by_case: dict[str, dict[int, str]] = {}
        for cid, seq, name in acked:
            by_case.setdefault(cid, {})[seq] = name
        for cid, seqs in by_case.items():
            history = {e.seq: e.name for e in engine.history(cid)}
            for seq, name in seqs.items():
                assert history.get(seq) == name, f"acknowledged {name} #{seq} of {cid} is lost"
            assert sorted(history) == list(range(1, len(history) + 1))
        assert engine.verify() == []
        assert_figures_intact(engine)  # no killed command left half of its figures
    assert len(acked) > kills * CHILD_THREADS  # the children did write before dying
    assert refused > 0 and largest > 1  # refusals among them, and commits in groups
