"""Optimistic versions, idempotency keys and concurrent commands, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from casework import ConflictError, Engine, IdempotencyKeyReused

from tests.petition_steps import (
    CLERK,
    FOUR_FIXES,
    HANDLER,
    OPEN_DATA,
    PATHS,
    TRIAGE,
    case_in,
    count_cases,
    drive,
    open_petition,
    snapshot,
)

# A case being handled: the activities below are the work of its people (its handler, the
# officers of its unit), who are assigned by then.
WORKING = "handling.investigating"

# -- optimistic row versions ----------------------------------------------------------


def test_fire_with_the_current_row_version_succeeds(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    after = any_engine.fire(case.id, "accept", actor=TRIAGE, expected_version=case.row_version)
    assert (after.state, after.row_version) == ("accepted", case.row_version + 1)


def test_fire_with_a_stale_row_version_raises_conflict_and_writes_nothing(
        any_engine: Engine) -> None:
    case = open_petition(any_engine)
    old = case.row_version
    any_engine.fire(case.id, "accept", actor=TRIAGE, expected_version=old)
    before = snapshot(any_engine, case.id)
    with pytest.raises(ConflictError) as info:
        any_engine.fire(case.id, "thought_work", actor=HANDLER, data={"notes": "n"},
                        expected_version=old)
    err = info.value
    assert (err.case_id, err.expected, err.actual) == (case.id, old, old + 1)
    assert case.id in str(err) and "stale row version" in str(err)
    assert snapshot(any_engine, case.id) == before
    assert any_engine.verify(case.id) == []


# -- idempotency keys -----------------------------------------------------------------


def test_repeated_key_returns_the_first_result_and_writes_one_event(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    first = any_engine.fire(case.id, "accept", actor=TRIAGE, idempotency_key="accept-1")
    again = any_engine.fire(case.id, "accept", actor=TRIAGE, idempotency_key="accept-1")
    assert (again.id, again.state, again.row_version, dict(again.data)) == (
        first.id, first.state, first.row_version, dict(first.data))
    history = any_engine.history(case.id)
    assert [e.name for e in history] == ["open", "accept"]
    assert [e.idempotency_key for e in history].count("accept-1") == 1
    assert any_engine.get_case(case.id).row_version == first.row_version


def test_repeated_key_after_later_commands_still_returns_the_first_result(
        any_engine: Engine) -> None:
    case = case_in(any_engine, WORKING)
    data = {"notes": "first talk"}
    first = any_engine.fire(case.id, "thought_work", actor=HANDLER, data=data,
                            idempotency_key="talk-1")
    any_engine.fire(case.id, "thought_work", actor=HANDLER, data={"notes": "second talk"})
    again = any_engine.fire(case.id, "thought_work", actor=HANDLER, data=data,
                            idempotency_key="talk-1")
    assert (again.state, again.row_version, dict(again.data)) == (
        first.state, first.row_version, dict(first.data))
    assert any_engine.get_case(case.id).row_version == first.row_version + 1
    assert len(any_engine.history(case.id)) == first.row_version + 1


def test_key_reused_for_a_different_trigger_is_refused_and_writes_nothing(
        any_engine: Engine) -> None:
    case = case_in(any_engine, WORKING)
    any_engine.fire(case.id, "thought_work", actor=HANDLER, data={"notes": "n"},
                    idempotency_key="k-1")
    before = snapshot(any_engine, case.id)
    with pytest.raises(IdempotencyKeyReused, match="k-1"):
        any_engine.fire(case.id, "home_visit", actor=HANDLER, data={"visitor": "wu"},
                        idempotency_key="k-1")
    assert snapshot(any_engine, case.id) == before


def test_key_reused_on_a_different_case_is_refused_and_writes_nothing(any_engine: Engine) -> None:
    a = open_petition(any_engine)
    b = open_petition(any_engine)
    any_engine.fire(a.id, "accept", actor=TRIAGE, idempotency_key="triage-7")
    before_a, before_b = snapshot(any_engine, a.id), snapshot(any_engine, b.id)
    with pytest.raises(IdempotencyKeyReused) as info:
        any_engine.fire(b.id, "accept", actor=TRIAGE, idempotency_key="triage-7")
    assert a.id in str(info.value) and b.id in str(info.value)
    assert snapshot(any_engine, a.id) == before_a
    assert snapshot(any_engine, b.id) == before_b


def test_key_of_an_open_reused_for_a_transition_is_refused(any_engine: Engine) -> None:
    case = any_engine.open_case("petition", OPEN_DATA, actor=CLERK, idempotency_key="intake-1")
    before = snapshot(any_engine, case.id)
    with pytest.raises(IdempotencyKeyReused):
        any_engine.fire(case.id, "accept", actor=TRIAGE, idempotency_key="intake-1")
    assert snapshot(any_engine, case.id) == before


def test_open_case_twice_with_one_key_opens_one_case(any_engine: Engine) -> None:
    first = any_engine.open_case("petition", OPEN_DATA, actor=CLERK, idempotency_key="intake-9")
    again = any_engine.open_case("petition", OPEN_DATA, actor=CLERK, idempotency_key="intake-9")
    assert again.id == first.id
    assert (again.state, again.row_version, dict(again.data)) == (
        first.state, first.row_version, dict(first.data))
    assert count_cases(any_engine) == 1
    assert len(any_engine.history(first.id)) == 1


def test_open_case_with_a_key_used_by_a_transition_is_refused(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    any_engine.fire(case.id, "accept", actor=TRIAGE, idempotency_key="used")
    with pytest.raises(IdempotencyKeyReused):
        any_engine.open_case("petition", OPEN_DATA, actor=CLERK, idempotency_key="used")
    assert count_cases(any_engine) == 1


# -- threads ----------------------------------------------------------------------------

THREADS = 8
PER_THREAD = 25


def _hammer(engine: Engine, case_id: str, fn) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(PER_THREAD):
                fn(n, i)
        except BaseException as e:  # collected and reported by the test
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    return errors


def test_concurrent_activities_on_one_case_all_apply_with_a_gapless_chain(
        any_engine: Engine) -> None:
    case = case_in(any_engine, WORKING)

    def one(n: int, i: int) -> None:  # officers of the case's unit, each in their own thread
        any_engine.fire(case.id, "thought_work", actor=f"handler:h{n}@{FOUR_FIXES['unit']}",
                        data={"notes": f"thread {n} talk {i}"})

    errors = _hammer(any_engine, case.id, one)
    assert errors == []
    history = any_engine.history(case.id)
    total = case.row_version + THREADS * PER_THREAD
    assert [e.seq for e in history] == list(range(1, total + 1))
    notes = Counter(e.details["notes"] for e in history if e.name == "thought_work")
    assert len(notes) == THREADS * PER_THREAD and set(notes.values()) == {1}
    after = any_engine.get_case(case.id)
    assert (after.state, after.row_version) == (WORKING, total)
    assert any_engine.verify() == []


def test_concurrent_commands_with_shared_keys_apply_each_key_once(any_engine: Engine) -> None:
    case = case_in(any_engine, WORKING)
    keys = [f"talk-{i}" for i in range(PER_THREAD)]

    def one(n: int, i: int) -> None:
        any_engine.fire(case.id, "thought_work", actor=HANDLER,
                        data={"notes": keys[i]}, idempotency_key=keys[i])

    errors = _hammer(any_engine, case.id, one)
    assert errors == []
    history = any_engine.history(case.id)
    applied = [e.idempotency_key for e in history if e.name == "thought_work"]
    assert sorted(applied) == sorted(keys)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert any_engine.verify(case.id) == []


def test_concurrent_lifecycles_on_separate_cases_each_reach_the_archive(
        any_engine: Engine) -> None:
    """The compiled machine is shared by every case and thread; no case sees another's move."""
    steps = [*PATHS["replied"], "visit_satisfied", "archive"]
    done: dict[int, str] = {}
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            start.wait()
            case = open_petition(any_engine)
            drive(any_engine, case.id, *steps)
            done[n] = case.id
        except BaseException as e:  # collected and reported by the test
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(set(done.values())) == THREADS
    for case_id in done.values():
        case = any_engine.get_case(case_id)
        assert (case.state, case.row_version) == ("archived", len(steps) + 1)
        assert [e.seq for e in any_engine.history(case_id)] == list(range(1, len(steps) + 2))
    assert any_engine.verify() == []
