"""Several processes on one PostgreSQL database: commands, schedulers, crashes, a restart.

Every child is a separate Python process started with multiprocessing's ``spawn``
context: it inherits nothing but its arguments and builds its own ``Engine`` from the
database URL, as a second host (or a second scheduler) would. Children are released
together by a barrier once their engines are built, and write what happened to them
(every command's outcome) to a JSON file that the test checks against the database.

These tests need the PostgreSQL server on 127.0.0.1:5432 (the ``pg_database`` fixture of
``conftest.py``: skipped when it cannot be reached, failed under ``CI=true``). The last
one restarts that server with ``pg_ctlcluster``.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from casework import (
    CommandRefused,
    ConflictError,
    Engine,
    GuardContext,
    StoreError,
    configure_logging,
)
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.conftest import PETITION, assert_figures_intact, new_pg_schema
from tests.helpers import database, naive, sql
from tests.petition_steps import CLERK, FOUR_FIXES, HANDLER, LEADER, OPEN_DATA, TRIAGE

pytestmark = pytest.mark.postgres

SPAWN = mp.get_context("spawn")
CLEAR_ERRORS = (CommandRefused, ConflictError, StoreError)
START_TIMEOUT = 120  # seconds for the children to import and build their engines


# -- helpers -----------------------------------------------------------------------------------


def _to_handling(engine: Engine) -> str:
    """A new petition, accepted and assigned: in ``handling.investigating``."""
    case = engine.open_case("petition", OPEN_DATA, actor=CLERK)
    engine.fire(case.id, "accept", actor=TRIAGE)
    engine.fire(case.id, "assign", actor=LEADER, data=FOUR_FIXES)
    return case.id


def _child(fn_name: str, out: str, barrier: Any, *args: Any) -> None:
    """Entry point of every child: run ``fn_name``, write its result (or its crash) to ``out``."""
    try:
        result = globals()[fn_name](barrier, *args)
    except BaseException:
        result = {"crash": traceback.format_exc()}
    Path(out).write_text(json.dumps(result), encoding="utf-8")


def _start(tmp: Path, fn_name: str, arglists: list[tuple[Any, ...]], barrier: Any = None,
           tag: str = "out") -> tuple[list[Any], list[Path]]:
    outs = [tmp / f"{tag}-{i}.json" for i in range(len(arglists))]
    for o in outs:
        o.unlink(missing_ok=True)
    procs = [SPAWN.Process(target=_child, args=(fn_name, str(o), barrier, *a), daemon=True)
             for o, a in zip(outs, arglists, strict=True)]
    for p in procs:
        p.start()
    return procs, outs


def _finish(procs: list[Any], outs: list[Path], timeout: float) -> list[dict[str, Any]]:
    """Wait for the children (killing any still alive after ``timeout``); their results."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    assert not hung, f"child process(es) {hung} did not finish within {timeout} s"
    results = []
    for p, o in zip(procs, outs, strict=True):
        assert o.exists(), f"child {p.pid} wrote no result (exit code {p.exitcode})"
        r = json.loads(o.read_text(encoding="utf-8"))
        assert "crash" not in r, f"child {p.pid} crashed:\n{r['crash']}"
        results.append(r)
    return results


def _outcome(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run one command; what came of it, as JSON."""
    t0 = time.time()
    try:
        case = fn()
    except CLEAR_ERRORS as e:
        return {"ok": False, "error": type(e).__name__, "clear": True, "message": str(e),
                "t0": t0, "t1": time.time()}
    except Exception as e:  # reported by the test: not a casework error
        return {"ok": False, "error": f"{type(e).__module__}.{type(e).__name__}", "clear": False,
                "message": repr(e)[:500], "t0": t0, "t1": time.time()}
    return {"ok": True, "id": getattr(case, "id", None), "row_version": case.row_version,
            "state": case.state, "t0": t0, "t1": time.time()}


def _events(url: str) -> list[tuple[Any, ...]]:
    """(case_id, seq, name, to_state, idempotency_key) of every event, in order."""
    return sql(url, "SELECT case_id, seq, name, to_state, idempotency_key FROM events "
                    "ORDER BY case_id, seq")


def _timer_events(url: str) -> Counter[int]:
    """How many events each timer wrote. A timer's event carries the timer's id in its
    details and an idempotency key ``timer:...``; no key may be written twice."""
    rows = sql(url, "SELECT idempotency_key, details::jsonb ->> 'timer' FROM events "
                    "WHERE idempotency_key LIKE 'timer:%'")
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)), "a timer's idempotency key was written twice"
    return Counter(int(r[1]) for r in rows)


def _assert_cases_consistent(url: str, engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every case: events numbered 1..N without a gap or a repeat, the case's row version and
    last seq at its last event, its state the last event's; the hash chains intact."""
    by_case: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for ev in _events(url):
        by_case[ev[0]].append(ev)
    cases = {r[0]: r[1:] for r in sql(url, "SELECT id, state, row_version, last_seq FROM cases")}
    assert set(by_case) == set(cases)
    for cid, evs in by_case.items():
        seqs = [e[1] for e in evs]
        assert seqs == list(range(1, len(seqs) + 1)), f"case {cid}: event seqs {seqs}"
        state, row_version, last_seq = cases[cid]
        assert row_version == last_seq == len(seqs), (cid, row_version, last_seq, len(seqs))
        assert state == evs[-1][3], (cid, state, evs[-1])
    assert engine.verify() == []
    assert_figures_intact(engine)  # what every process added to the report figures adds up
    return by_case


# -- a. many processes, the same cases ------------------------------------------------------------

PROCS = 8
PER_PROC = 500
N_CASES = 20
RACE_CASES = range(0, 8)  # every process tries decide, then reply, on each of these
TOGGLE_CASES = range(8, 12)  # suspend / resume from any process
SHARED_KEYS = 40  # commands every process sends identically


def _command_plan(n: int, case_ids: list[str]) -> list[dict[str, Any]]:
    """Process ``n``'s commands. The fixed ones (the races and the shared keys) sit at the same
    index in every process's plan; the rest are drawn from a generator seeded by ``n``."""
    fixed: dict[int, dict[str, Any]] = {}

    def put(i: int, cmd: dict[str, Any]) -> None:
        while i in fixed:
            i += 1
        fixed[i] = cmd

    for k in RACE_CASES:
        cid = case_ids[k]
        put(40 + 55 * k, {"tag": "decide", "case": cid, "trigger": "decide", "actor": HANDLER,
                          "data": {"outcome": "explanation", "decision_summary": f"by p{n}"},
                          "key": f"decide-{k}-p{n}"})
        put(60 + 55 * k, {"tag": "reply", "case": cid, "trigger": "reply", "actor": LEADER,
                          "data": {"reply_summary": f"by p{n}"}, "key": f"reply-{k}-p{n}"})
    for j in range(SHARED_KEYS):
        put(5 + 12 * j, {"tag": "shared", "case": case_ids[j % N_CASES], "trigger": "thought_work",
                         "actor": LEADER, "data": {"notes": f"shared talk {j}"},
                         "key": f"shared-{j}"})
    rnd = random.Random(1000 + n)
    plan = []
    for i in range(PER_PROC):
        if i in fixed:
            plan.append({**fixed[i], "i": i})
            continue
        key = f"p{n}-{i}"
        r = rnd.random()
        cid = rnd.choice(case_ids)
        if r < 0.10:
            cid = case_ids[rnd.choice(TOGGLE_CASES)]
            if rnd.random() < 0.5:
                cmd = {"tag": "toggle", "trigger": "suspend", "actor": HANDLER,
                       "data": {"suspension_reason": f"p{n} cannot reach the petitioner"}}
            else:
                cmd = {"tag": "toggle", "trigger": "resume", "actor": HANDLER, "data": {}}
        elif r < 0.22:
            cmd = {"tag": "fresh", "trigger": "thought_work", "actor": LEADER,
                   "data": {"notes": f"p{n} talk {i} at the version read"}, "expect": "fresh"}
        elif r < 0.27:
            cmd = {"tag": "stale", "trigger": "thought_work", "actor": LEADER,
                   "data": {"notes": f"p{n} talk {i} at an old version"}, "expect": "stale"}
        elif r < 0.30:
            cmd = {"tag": "visit", "trigger": "home_visit", "actor": LEADER,
                   "data": {"visitor": f"p{n}", "notes": f"visit {i}"}}
        else:
            cmd = {"tag": "talk", "trigger": "thought_work", "actor": LEADER,
                   "data": {"notes": f"p{n} talk {i}"}}
        plan.append({**cmd, "case": cid, "key": key, "i": i})
    return plan


def _commands_worker(barrier: Any, url: str, n: int, case_ids: list[str]) -> dict[str, Any]:
    engine = Engine(url, [PETITION], pool_size=1)
    plan = _command_plan(n, case_ids)
    barrier.wait(START_TIMEOUT)
    outcomes = []
    t0 = time.time()
    for cmd in plan:
        expected = None
        if "expect" in cmd:
            v = engine.get_case(cmd["case"]).row_version
            expected = v if cmd["expect"] == "fresh" else v - 1

        def fire(cmd: dict[str, Any] = cmd, expected: int | None = expected) -> Any:
            return engine.fire(cmd["case"], cmd["trigger"], actor=cmd["actor"], data=cmd["data"],
                               expected_version=expected, idempotency_key=cmd["key"])

        outcomes.append({**cmd, "proc": n, **_outcome(fire)})
    t1 = time.time()
    engine.close()
    return {"outcomes": outcomes, "t0": t0, "t1": t1}


@pytest.mark.slow
def test_eight_processes_send_commands_to_the_same_cases(pg_database: str, tmp_path: Path) -> None:
    url = new_pg_schema(pg_database)
    with Engine(url, [PETITION]) as engine:
        case_ids = [_to_handling(engine) for _ in range(N_CASES)]
        barrier = SPAWN.Barrier(PROCS + 1)
        procs, outs = _start(tmp_path, "_commands_worker",
                             [(url, n, case_ids) for n in range(PROCS)], barrier)
        barrier.wait(START_TIMEOUT)
        results = _finish(procs, outs, timeout=300)
        outcomes = [o for r in results for o in r["outcomes"]]
        wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
        assert len(outcomes) == PROCS * PER_PROC

        # Every failure is a casework error that says what happened.
        unclear = [o for o in outcomes if not o["ok"] and not o["clear"]]
        assert unclear == [], unclear[:5]
        kinds = Counter("ok" if o["ok"] else o["error"] for o in outcomes)
        print(f"\n{PROCS} processes x {PER_PROC} commands on {N_CASES} cases: {wall:.1f} s, "
              f"{len(outcomes) / wall:.0f} commands/s; outcomes {dict(kinds)}")

        by_case = _assert_cases_consistent(url, engine)
        events = [e for evs in by_case.values() for e in evs]
        key_count = Counter(e[4] for e in events if e[4] is not None)
        assert max(key_count.values()) == 1
        event_of = {e[4]: e for e in events if e[4] is not None}

        # Every command applied exactly once, or was refused and wrote nothing.
        ok_keys = {o["key"] for o in outcomes if o["ok"]}
        assert set(key_count) == ok_keys, "events and successful commands differ"
        for o in outcomes:
            if o["ok"]:
                ev = event_of[o["key"]]
                # A replay (shared key) returns the case as the first command left it.
                assert (ev[0], ev[2]) == (o["case"], o["trigger"]), o
                assert (o["row_version"], o["state"]) == (ev[1], ev[3]), (o, ev)
        unkeyed = Counter(e[2] for e in events if e[4] is None)
        assert unkeyed == {"open": N_CASES, "accept": N_CASES, "assign": N_CASES}

        # What could fail, failed the way it should.
        for o in outcomes:
            if o["ok"]:
                continue
            allowed = {"decide": {"WrongState"}, "reply": {"WrongState"},
                       "toggle": {"WrongState"}, "fresh": {"ConflictError"},
                       "stale": {"ConflictError"}}.get(o["tag"], set())
            assert o["error"] in allowed, o
            assert o["case"] in o["message"], o
        assert all(not o["ok"] for o in outcomes if o["tag"] == "stale")
        shared: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for o in outcomes:
            if o["tag"] == "shared":
                shared[o["key"]].append(o)
        assert len(shared) == SHARED_KEYS
        for key, os_ in shared.items():
            assert [o["ok"] for o in os_] == [True] * PROCS, key
            assert len({(o["row_version"], o["state"]) for o in os_}) == 1, key

        # The races: of the eight processes, exactly one decides and exactly one replies.
        for k in RACE_CASES:
            for tag in ("decide", "reply"):
                tried = [o for o in outcomes if o["tag"] == tag and o["case"] == case_ids[k]]
                assert len(tried) == PROCS
                winners = [o for o in tried if o["ok"]]
                assert len(winners) == 1, (k, tag, [(o["proc"], o.get("error")) for o in tried])
                assert Counter(o["error"] for o in tried if not o["ok"]) == {"WrongState": PROCS - 1}
            assert [e[2] for e in by_case[case_ids[k]] if e[2] in ("decide", "reply")] == [
                "decide", "reply"]

        # Each final state is the one the successful commands lead to.
        final = {r[0]: r[1] for r in sql(url, "SELECT id, state FROM cases")}
        for k, cid in enumerate(case_ids):
            if k in RACE_CASES:
                assert final[cid] == "replied"
            elif k in TOGGLE_CASES:
                toggles = [o for o in outcomes if o["case"] == cid and o["tag"] == "toggle" and o["ok"]]
                last = max(toggles, key=lambda o: o["row_version"]) if toggles else None
                expect = ("handling.investigating" if last is None or last["trigger"] == "resume"
                          else "handling.suspended")
                assert final[cid] == expect, (cid, final[cid], last)
            else:
                assert final[cid] == "handling.investigating"
        n_toggles = sum(o["ok"] for o in outcomes if o["tag"] == "toggle")
        assert n_toggles == sum(1 for e in events if e[2] in ("suspend", "resume"))


OPENERS = 6
INTAKES = 40


def _open_worker(barrier: Any, url: str, n: int) -> dict[str, Any]:
    engine = Engine(url, [PETITION], pool_size=1)
    order = list(range(INTAKES))
    random.Random(n).shuffle(order)
    barrier.wait(START_TIMEOUT)
    outcomes = [{**_outcome(lambda j=j: engine.open_case(
                    "petition", {**OPEN_DATA, "summary": f"intake {j}"}, actor=CLERK,
                    idempotency_key=f"intake-{j}")), "key": f"intake-{j}"}
                for j in order]
    engine.close()
    return {"outcomes": outcomes}


@pytest.mark.slow
def test_processes_opening_cases_with_shared_keys_open_each_once(pg_database: str,
                                                                  tmp_path: Path) -> None:
    """Several processes open the same intakes (same idempotency keys) at once: one case each,
    and every process gets that case back."""
    url = new_pg_schema(pg_database)
    Engine(url, [PETITION]).close()
    barrier = SPAWN.Barrier(OPENERS + 1)
    procs, outs = _start(tmp_path, "_open_worker", [(url, n) for n in range(OPENERS)], barrier)
    barrier.wait(START_TIMEOUT)
    outcomes = [o for r in _finish(procs, outs, timeout=120) for o in r["outcomes"]]
    failed = [o for o in outcomes if not o["ok"]]
    assert failed == [], failed[:5]
    ids: dict[str, set[str]] = defaultdict(set)
    for o in outcomes:
        ids[o["key"]].add(o["id"])
    assert all(len(v) == 1 for v in ids.values()), ids
    stored = dict(sql(url, "SELECT idempotency_key, case_id FROM events WHERE name = 'open'"))
    assert stored == {k: next(iter(v)) for k, v in ids.items()}
    assert sql(url, "SELECT count(*) FROM cases") == [(INTAKES,)]


# -- b. three schedulers, 10,000 due timers --------------------------------------------------------

TIMERS = 10_000
TIMER_CASES = 500
SCHEDULERS = 3


def _scheduler_worker(barrier: Any, url: str, owner: str, now_iso: str, batch: int,
                      lease_s: float) -> dict[str, Any]:
    engine = Engine(url, [PETITION], pool_size=1)
    heard: list[tuple[str, int]] = []
    engine.on("warned", lambda notice: heard.append((notice.case.id, notice.event.seq)))
    now = datetime.fromisoformat(now_iso)
    barrier.wait(START_TIMEOUT)
    t0 = time.time()
    r = engine.run_due(now=now, owner=owner, batch_size=batch, lease=timedelta(seconds=lease_s))
    t1 = time.time()
    engine.close()
    return {"owner": owner, "fired": r.fired, "skipped": r.skipped, "batches": r.batches,
            "by_kind": dict(r.by_kind), "t0": t0, "t1": t1, "heard": heard}


def _insert_warning_timers(url: str, case_ids: list[str], n: int, due: datetime,
                           spread: timedelta = timedelta(seconds=0)) -> list[int]:
    """``n`` pending ``warning`` timers of the ``handling`` deadline, due at ``due`` (naive UTC)
    plus up to ``spread`` (evenly), spread round-robin over ``case_ids``; their ids. Timers of
    one case at one due instant count as one timer (they make one idempotency key), so give
    a ``spread`` when a case gets several."""
    payload = json.dumps({"deadline": "handling", "share": 0.5,
                          "due": (due + timedelta(days=30)).replace(tzinfo=UTC).isoformat()})
    step = spread / n
    rows = sql(url, "INSERT INTO timers (case_id, workflow, kind, name, state, due_at, status, "
                    "payload, created_at) "
                    "SELECT (CAST(:ids AS text[]))[1 + g % :m], 'petition', 'warning', 'handling', "
                    "'handling', :due + g * :step, 'pending', :payload, :due "
                    "FROM generate_series(0, :n - 1) AS g RETURNING id",
               ids=case_ids, m=len(case_ids), due=due, step=step, payload=payload, n=n)
    return [r[0] for r in rows]


def _open_in_handling(engine: Engine, n: int, threads: int = 4) -> list[str]:
    """``n`` cases in handling, opened through the engine by a few threads."""
    out: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(count: int) -> None:
        try:
            for _ in range(count):
                cid = _to_handling(engine)
                with lock:
                    out.append(cid)
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=work, args=(n // threads + (i < n % threads),))
          for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    return out


@pytest.mark.slow
def test_three_schedulers_fire_ten_thousand_timers_each_once(pg_database: str,
                                                             tmp_path: Path) -> None:
    url = new_pg_schema(pg_database)
    now = datetime.now(UTC).replace(microsecond=0)
    with Engine(url, [PETITION], pool_size=4) as engine:
        t = time.perf_counter()
        case_ids = _open_in_handling(engine, TIMER_CASES)
        ids = _insert_warning_timers(url, case_ids, TIMERS, naive(now - timedelta(hours=2)),
                                     spread=timedelta(hours=1))
        setup = time.perf_counter() - t
        assert len(set(ids)) == TIMERS
        assert sql(url, "SELECT count(*) FROM timers WHERE status = 'pending' AND due_at <= :now",
                   now=naive(now)) == [(TIMERS,)]

        barrier = SPAWN.Barrier(SCHEDULERS + 1)
        procs, outs = _start(tmp_path, "_scheduler_worker",
                             [(url, f"p{i}", now.isoformat(), 100, 600.0)
                              for i in range(SCHEDULERS)], barrier)
        barrier.wait(START_TIMEOUT)
        results = _finish(procs, outs, timeout=300)
        wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)

        fired = {r["owner"]: r["fired"] for r in results}
        assert sum(fired.values()) == TIMERS, results
        assert all(r["by_kind"] == {"warning": r["fired"]} for r in results if r["fired"])
        status = dict(sql(url, "SELECT status, count(*) FROM timers WHERE id = ANY(:ids) "
                               "GROUP BY status", ids=ids))
        assert status == {"fired": TIMERS}
        claimed = dict(sql(url, "SELECT claimed_by, count(*) FROM timers WHERE id = ANY(:ids) "
                                "GROUP BY claimed_by", ids=ids))
        # Each timer was fired by the process that claimed it; the work was shared.
        assert claimed == fired
        assert all(n > 0 for n in claimed.values()), claimed
        assert _timer_events(url) == dict.fromkeys(ids, 1)
        by_case = _assert_cases_consistent(url, engine)
        warned = Counter(e[0] for evs in by_case.values() for e in evs if e[2] == "handling_warning")
        assert warned == dict.fromkeys(case_ids, TIMERS // TIMER_CASES)
        # Every warning notice reached the subscribers once, in one of the processes (each
        # process claims the notices it delivers).
        heard = [tuple(h) for r in results for h in r["heard"]]
        warnings = {(e[0], e[1]) for evs in by_case.values() for e in evs
                    if e[2] == "handling_warning"}
        assert set(heard) == warnings
        assert len(heard) == len(warnings)
        split = ", ".join(f"{o}: {n}" for o, n in sorted(claimed.items()))
        print(f"\nsetup {setup:.1f} s; {SCHEDULERS} schedulers fired {TIMERS} timers in {wall:.1f} s "
              f"({TIMERS / wall:.0f}/s); split {split}; notices heard {len(heard)} times "
              f"for {len(warnings)} warnings")


# -- c. processes killed while holding a case lock or a timer claim ------------------------------

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
activities:
  note:
    states: [open, held]
    roles: [worker]
    fields:
      note: {type: text}
    required: [note]
"""


def _blocking_guard(ready: str, ctx: GuardContext) -> bool:
    """A named guard that says it holds the case, then waits (until its process is killed)."""
    Path(ready).write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(300)
    return True


def _holder_worker(barrier: Any, url: str, wf: str, case_id: str, ready: str) -> dict[str, Any]:
    engine = Engine(url, [wf], guards={"hold": functools.partial(_blocking_guard, ready)},
                    pool_size=1)
    return {"outcome": _outcome(lambda: engine.fire(case_id, "hold_it", actor="worker:killed",
                                                    idempotency_key="hold-1"))}


def _note_worker(barrier: Any, url: str, wf: str, case_id: str, n: int, ready: str) -> dict[str, Any]:
    engine = Engine(url, [wf], guards={"hold": lambda ctx: True}, pool_size=1)
    Path(ready).write_text("ready", encoding="utf-8")
    outcomes = [_outcome(lambda i=i: engine.fire(case_id, "note", actor=f"worker:w{n}",
                                                 data={"note": f"w{n} note {i}"},
                                                 idempotency_key=f"w{n}-{i}"))
                for i in range(3)]
    engine.close()
    return {"outcomes": outcomes, "t1": time.time()}


def _wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _row_locked(url: str, case_id: str) -> bool:
    import psycopg

    try:
        sql(url, "SELECT id FROM cases WHERE id = :id FOR UPDATE NOWAIT", id=case_id)
    except OperationalError as e:
        if isinstance(e.orig, psycopg.errors.LockNotAvailable):
            return True
        raise
    return False


@pytest.mark.slow
def test_a_process_killed_holding_a_case_lock_leaves_nothing_and_blocks_no_one(
        pg_database: str, tmp_path: Path) -> None:
    url = new_pg_schema(pg_database)
    wf = tmp_path / "holdcase.yaml"
    wf.write_text(HOLD_WORKFLOW, encoding="utf-8")
    with Engine(url, [wf], guards={"hold": lambda ctx: True}) as engine:
        case = engine.open_case("holdcase", {}, actor="worker:opener")
        ready = tmp_path / "holding"
        holder, _ = _start(tmp_path, "_holder_worker",
                                    [(url, str(wf), case.id, str(ready))], tag="holder")
        _wait_for(ready.exists, START_TIMEOUT, "the holder to reach its guard")
        assert _row_locked(url, case.id), "the holder's command should hold the case row"

        readies = [tmp_path / f"note-ready-{n}" for n in range(2)]
        notes, note_outs = _start(tmp_path, "_note_worker",
                                  [(url, str(wf), case.id, n, str(readies[n])) for n in range(2)],
                                  tag="note")
        _wait_for(lambda: all(r.exists() for r in readies), START_TIMEOUT, "the note writers")
        time.sleep(1.5)
        # They wait behind the holder's lock: nothing of theirs is written yet.
        assert not any(o.exists() for o in note_outs)
        assert [e.name for e in engine.history(case.id)] == ["open"]

        holder[0].kill()  # SIGKILL: no rollback, no goodbye; the server must notice
        killed_at = time.time()
        holder[0].join(10)
        assert holder[0].exitcode == -9
        results = _finish(notes, note_outs, timeout=30)
        resumed = max(r["t1"] for r in results) - killed_at
        print(f"\nthe writers finished {resumed:.2f} s after the holder was killed")
        assert all(o["ok"] for r in results for o in r["outcomes"]), results

        history = engine.history(case.id)
        assert [e.name for e in history] == ["open"] + ["note"] * 6
        assert "hold-1" not in {e.idempotency_key for e in history}
        assert engine.get_case(case.id).state == "open"
        _assert_cases_consistent(url, engine)
        assert not _row_locked(url, case.id)
        # The killed command's key is free: sent again, it applies (once).
        after = engine.fire(case.id, "hold_it", actor="worker:again", idempotency_key="hold-1")
        assert (after.state, after.row_version) == ("held", 8)
        assert [e.idempotency_key for e in engine.history(case.id)].count("hold-1") == 1


def _log_sink_pausing_in_timers(holding: str, seconds: float, message: str) -> None:
    """A log sink that, when the scheduler logs the timer it is firing (inside that timer's
    transaction, the case and the timer locked), says so in the file ``holding`` and
    pauses ``seconds``: a busy machine, or (a long pause) a process that dies there."""
    if "deadline" in message:
        Path(holding).write_text(message, encoding="utf-8")
        time.sleep(seconds)


def _claimer_worker(barrier: Any, url: str, now_iso: str, lease_s: float, n: int,
                    holding: str) -> dict[str, Any]:
    """A scheduler that claims a batch of ``n`` due timers and stops in the first one's
    transaction (until it is killed there)."""
    engine = Engine(url, [PETITION], pool_size=1)
    configure_logging("INFO", sink=functools.partial(_log_sink_pausing_in_timers, holding, 300))
    r = engine.run_due(now=datetime.fromisoformat(now_iso), owner="dead", batch_size=n,
                       lease=timedelta(seconds=lease_s))
    return {"fired": r.fired}


@pytest.mark.slow
def test_a_scheduler_killed_holding_a_claim_is_taken_over_after_its_lease(
        pg_database: str, tmp_path: Path) -> None:
    url = new_pg_schema(pg_database)
    now = datetime.now(UTC).replace(microsecond=0)
    lease = timedelta(seconds=60)
    with Engine(url, [PETITION]) as engine:
        case_ids = [_to_handling(engine) for _ in range(10)]
        spread = timedelta(minutes=10)  # every timer its own due instant
        older = _insert_warning_timers(url, case_ids, 50, naive(now - timedelta(hours=2)), spread)
        newer = _insert_warning_timers(url, case_ids, 30, naive(now - timedelta(hours=1)), spread)
        holding = tmp_path / "holding"
        procs, _ = _start(tmp_path, "_claimer_worker",
                          [(url, now.isoformat(), lease.total_seconds(), 50, str(holding))],
                          tag="claimer")
        _wait_for(holding.exists, START_TIMEOUT, "the claim")
        time.sleep(0.2)
        procs[0].kill()  # SIGKILL, inside the first claimed timer's transaction
        procs[0].join(10)
        assert procs[0].exitcode == -9
        claimed = [r[0] for r in sql(url, "SELECT id FROM timers WHERE claimed_by = 'dead'")]
        assert sorted(claimed) == sorted(older)  # the oldest due first
        rows = sql(url, "SELECT claimed_by, lease_until, status FROM timers WHERE id = ANY(:ids)",
                   ids=claimed)
        assert {tuple(r) for r in rows} == {("dead", naive(now + lease), "pending")}

        # While the dead owner's lease runs, another owner leaves its timers alone.
        r1 = engine.run_due(now=now, owner="alive", lease=lease)
        assert (r1.fired, r1.skipped) == (len(newer), 0)
        rows = sql(url, "SELECT claimed_by, status FROM timers WHERE id = ANY(:ids)", ids=claimed)
        assert {tuple(r) for r in rows} == {("dead", "pending")}
        assert _timer_events(url) == dict.fromkeys(newer, 1)

        # Once the lease has run out, they are taken over and fired, each once.
        later = now + lease + timedelta(seconds=1)
        r2 = engine.run_due(now=later, owner="alive", lease=lease)
        assert (r2.fired, r2.skipped) == (len(claimed), 0)
        r3 = engine.run_due(now=later, owner="third", lease=lease)
        assert (r3.fired, r3.skipped) == (0, 0)
        rows = sql(url, "SELECT claimed_by, status FROM timers WHERE id = ANY(:ids)",
                   ids=older + newer)
        assert {tuple(r) for r in rows} == {("alive", "fired")}
        assert _timer_events(url) == dict.fromkeys(older + newer, 1)
        _assert_cases_consistent(url, engine)


def _slow_scheduler_worker(barrier: Any, url: str, now_iso: str, holding: str) -> dict[str, Any]:
    """A scheduler that pauses for a moment in each timer's transaction (a busy machine)."""
    engine = Engine(url, [PETITION], pool_size=1)
    configure_logging("INFO", sink=functools.partial(_log_sink_pausing_in_timers, holding, 1.5))
    now = datetime.fromisoformat(now_iso)
    t0 = time.time()
    try:
        r = engine.run_due(now=now, owner="slow", lease=timedelta(minutes=5))
        out: dict[str, Any] = {"ok": True, "fired": r.fired, "skipped": r.skipped}
    except Exception as e:
        out = {"ok": False, "error": f"{type(e).__module__}.{type(e).__name__}", "message": str(e)}
    engine.close()
    return {**out, "t0": t0, "t1": time.time()}


@pytest.mark.slow
def test_a_command_and_the_scheduler_on_one_case_both_go_through(pg_database: str,
                                                                 tmp_path: Path) -> None:
    """The scheduler fires a case's due timer while a command on that case cancels the case's
    timers (``suspend`` pauses the handling deadline). Whichever goes first, both must go
    through: the timer fired once (or cancelled unfired), the command applied, no error."""
    url = new_pg_schema(pg_database)
    now = datetime.now(UTC).replace(microsecond=0)
    with Engine(url, [PETITION]) as engine:
        cid = _to_handling(engine)
        [timer_id] = _insert_warning_timers(url, [cid], 1, naive(now - timedelta(hours=1)))
        holding = tmp_path / "holding"
        procs, outs = _start(tmp_path, "_slow_scheduler_worker", [(url, now.isoformat(),
                                                                   str(holding))], tag="sched")
        _wait_for(holding.exists, START_TIMEOUT, "the scheduler to lock the timer")
        # The scheduler is firing the timer (it holds the case and the timer); the command
        # waits for the case, then cancels the case's pending handling timers.
        command = _outcome(lambda: engine.fire(cid, "suspend", actor=HANDLER,
                                               data={"suspension_reason": "abroad"}))
        [sched] = _finish(procs, outs, timeout=60)
        assert command["ok"], command
        assert sched["ok"], sched
        status = sql(url, "SELECT status FROM timers WHERE id = :id", id=timer_id)[0][0]
        fired = _timer_events(url)[timer_id]
        assert (status, fired) in {("fired", 1), ("cancelled", 0)}, (status, fired)
        assert engine.get_case(cid).state == "handling.suspended"
        _assert_cases_consistent(url, engine)


# -- engines started at once ---------------------------------------------------------------------


def _startup_worker(barrier: Any, url: str) -> dict[str, Any]:
    barrier.wait(START_TIMEOUT)

    def start() -> Any:
        engine = Engine(url, [PETITION], pool_size=1)
        engine.close()
        return _Started()

    return {"outcome": _outcome(start)}


class _Started:
    """What ``_outcome`` records of an engine that started."""

    row_version = 0
    state = "started"


# What the test holds in its own transaction while the engines start, so that each engine
# has made its check ("is it there?") and waits at the write it decided on ("add it"): a
# busy machine between the two, made certain. ``empty``: the schema revision's table is
# being created by another transaction (the engines see none, and the first to create it
# waits; the others wait behind it). ``new_version``: the table of workflow versions
# takes no inserts; ``cron_missing``: the timers table takes none.
HOLD = {
    "empty": "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
    "new_version": "LOCK TABLE workflow_versions IN EXCLUSIVE MODE",
    "cron_missing": "LOCK TABLE timers IN EXCLUSIVE MODE",
}


def _lock_waiters(url: str) -> int:
    """How many server processes of the database wait for a lock (asked on a connection of
    its own: a transaction sees the activity as it was when it first looked)."""
    [(n,)] = sql(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND wait_event_type = 'Lock'")
    return int(n)


@pytest.mark.slow
@pytest.mark.parametrize("start_on", ["empty", "new_version", "cron_missing"])
def test_engines_started_at_once_by_several_processes(pg_database: str, tmp_path: Path,
                                                      start_on: str) -> None:
    """Several hosts (or schedulers) started together on one database: every one starts, the
    schema and the workflow version are stored once, each cron cycle has one pending timer.

    ``empty``: a new schema, its tables not made yet. ``new_version``: the tables exist, the
    workflow version is not stored yet (a deployment of a new definition). ``cron_missing``:
    the version is stored but its cron cycle has no pending timer (the engine that stored it
    died before adding it). The engines all make their checks before any of them writes
    (see ``HOLD``), then go on together.
    """
    url = new_pg_schema(pg_database)
    if start_on == "new_version":
        Engine(url, []).close()
    elif start_on == "cron_missing":
        Engine(url, [PETITION]).close()
        sql(url, "DELETE FROM timers WHERE kind = 'cron'")
    n = 4
    barrier = SPAWN.Barrier(n + 1)
    procs, outs = _start(tmp_path, "_startup_worker", [(url,)] * n, barrier)
    with database(url) as db, db.connect() as conn:
        conn.execute(text(HOLD[start_on]))
        barrier.wait(START_TIMEOUT)
        _wait_for(lambda: _lock_waiters(url) == n or not all(p.is_alive() for p in procs),
                  START_TIMEOUT, "every engine to wait at its first write")
        waiting = _lock_waiters(url)
        conn.rollback()
    results = _finish(procs, outs, timeout=120)
    problems = [r["outcome"] for r in results if not r["outcome"]["ok"]]
    assert problems == [], "\n".join(f"{p['error']}: {p['message'][:300]}" for p in problems)
    assert waiting == n, f"{waiting} of {n} engines waited to write"
    assert sql(url, "SELECT count(*) FROM workflow_versions WHERE name = 'petition'") == [(1,)]
    crons = sql(url, "SELECT name, count(*) FROM timers WHERE kind = 'cron' AND status = 'pending' "
                     "GROUP BY name")
    assert crons and all(c == 1 for _, c in crons), crons


# -- d. the server restarted under load ----------------------------------------------------------


def _pg_version() -> str | None:
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        return None
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1] if versions else None


def _pg_ready() -> bool:
    import psycopg

    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2):
            return True
    except Exception:
        return False


def _pg_ctl(version: str, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def pg_cluster() -> Iterator[str]:
    """The version of the local cluster that ``pg_ctlcluster`` controls; up again afterwards."""
    version = _pg_version()
    if version is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pg_ctlcluster and /etc/postgresql are needed under CI")
        pytest.skip("no pg_ctlcluster here to restart PostgreSQL with")
    try:
        yield version
    finally:
        if not _pg_ready():
            _pg_ctl(version, "start")
        deadline = time.monotonic() + 60
        while not _pg_ready() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _pg_ready(), "PostgreSQL did not come back up"


RESTART_THREADS = 3
RESTART_CASES = 6


@pytest.mark.slow
def test_engine_survives_a_server_restart_under_load(pg_database: str, pg_cluster: str) -> None:
    url = new_pg_schema(pg_database)
    with Engine(url, [PETITION], pool_size=RESTART_THREADS, retries=3) as engine:
        case_ids = [_to_handling(engine) for _ in range(RESTART_CASES)]
        stop = threading.Event()
        restarted = threading.Event()
        outcomes: list[list[dict[str, Any]]] = [[] for _ in range(RESTART_THREADS)]
        after_ok = [0] * RESTART_THREADS

        def sender(n: int) -> None:
            i = 0
            while not stop.is_set():
                cid = case_ids[(n + i) % RESTART_CASES]
                key = f"r{n}-{i}"
                o = _outcome(lambda cid=cid, key=key: engine.fire(
                    cid, "thought_work", actor=LEADER, data={"notes": key}, idempotency_key=key))
                outcomes[n].append({**o, "case": cid, "key": key, "after": restarted.is_set()})
                if o["ok"] and restarted.is_set():
                    after_ok[n] += 1
                i += 1

        threads = [threading.Thread(target=sender, args=(n,), daemon=True)
                   for n in range(RESTART_THREADS)]
        booted = sql(url, "SELECT pg_postmaster_start_time()")[0][0]
        try:
            for t in threads:
                t.start()
            time.sleep(1.5)
            t0 = time.time()
            done = _pg_ctl(pg_cluster, "restart")
            t1 = time.time()
            assert done.returncode == 0, done.stderr
            restarted.set()
            deadline = time.monotonic() + 30
            while min(after_ok) < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not any(t.is_alive() for t in threads), "a sender hung"
        assert sql(url, "SELECT pg_postmaster_start_time()")[0][0] > booted, "no restart happened"

        flat = [o for os_ in outcomes for o in os_]
        failed = [o for o in flat if not o["ok"]]
        unclear = [o for o in failed if o["error"] != "StoreError"]
        assert unclear == [], unclear[:5]
        # The engine reconnected: every sender's commands succeed again after the restart.
        assert min(after_ok) >= 20, after_ok
        in_window = [o for o in flat if o["t1"] >= t0 and o["t0"] <= t1 + 1]
        print(f"\nrestart took {t1 - t0:.1f} s; {len(flat)} commands, {len(failed)} failed with "
              f"StoreError ({len(in_window)} overlapped the restart); "
              f"{sum(after_ok)} succeeded after it")
        for message, count in Counter(o["message"][:160] for o in failed).most_common(5):
            print(f"  {count} x {message}")

        keys = Counter(r[0] for r in sql(url, "SELECT idempotency_key FROM events "
                                              "WHERE idempotency_key LIKE 'r%'"))
        for o in flat:
            if o["ok"]:
                assert keys[o["key"]] == 1, o
            else:
                assert keys[o["key"]] <= 1, o  # it may have committed before the line went
        assert set(keys) <= {o["key"] for o in flat}
        # Sent again with its key, each failed command applies once, or replays if it had.
        for o in failed:
            again = engine.fire(o["case"], "thought_work", actor=LEADER, data={"notes": o["key"]},
                                idempotency_key=o["key"])
            assert again.state == "handling.investigating"
        keys = Counter(r[0] for r in sql(url, "SELECT idempotency_key FROM events "
                                              "WHERE idempotency_key LIKE 'r%'"))
        assert keys == dict.fromkeys((o["key"] for o in flat), 1)
        _assert_cases_consistent(url, engine)


# -- the PostgreSQL benchmark runs end to end at a tiny size -------------------------------------


@pytest.mark.slow
def test_pg_bench_runs_at_a_tiny_size(pg_database: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from bench.harness import main

    out = tmp_path / "results.json"
    md = tmp_path / "RESULTS.md"
    md.write_text("# Recorded benchmark runs\n\nIntro.\n\n## older run\n\nkept\n", encoding="utf-8")
    rc = main(["pg", "--admin-url", pg_database, "--procs", "1,2", "--cases", "3", "--timers", "40",
               "--schedulers", "1,2", "--repeat", "1", "--out", str(out), "--record", str(md),
               "--quiet"])
    assert rc == 0
    results = json.loads(out.read_text(encoding="utf-8"))["pg"]
    figures = {k: v for k, v in results.items() if k.startswith(("fire_", "timers_"))}
    assert set(figures) == {"fire_1", "fire_2", "timers_1", "timers_2"}
    for p in (1, 2):
        f = figures[f"fire_{p}"]
        assert f["engine_fires_per_s"]["median"] > 0 and f["floor_tx_per_s"]["median"] > 0
        assert f["fires_per_run"] == f["transactions_per_floor_run"]
    assert [sum(s) for s in figures["timers_2"]["split"]] == [40]
    assert [t["name"] for t in results["targets"]] == ["1 proc engine/floor", "2 proc engine/floor"]
    printed = capsys.readouterr().out
    assert "engine / floor" in printed and "timers fired/s" in printed
    text = md.read_text(encoding="utf-8")
    assert text.index("# Recorded benchmark runs") < text.index("python -m bench pg") < text.index(
        "## older run")
    assert text.endswith("kept\n")
    # The throwaway database is gone.
    assert sql(pg_database, "SELECT count(*) FROM pg_database WHERE datname LIKE :name",
               name=f"casework_bench_{os.getpid()}_%") == [(0,)]
