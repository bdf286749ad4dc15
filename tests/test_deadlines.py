"""SLA deadlines of the petition workflow, fired by the scheduler at exact instants.

A FrozenClock is moved in steps and ``engine.run_due()`` is called: each warning and
each breach fires at the instant its definition gives, and one microsecond earlier
nothing of it fires. Calendar days (the petition workflow as shipped, its periods counted
as exact durations: ``exact_petition``; the law's way of counting days is tested in
``test_legal_periods``) and China's working days (``calendars={"petition":
"cn_workdays"}``) across National Day 2026, whose expected instants are computed in
``tests.scheduler_steps`` from ``chinese_calendar.is_workday`` alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from casework import Engine, Event, FrozenClock, Timer, TimerKind, TimerStatus, UnknownCalendarYear

from tests.conftest import COMPLAINT, PETITION
from tests.helpers import event_rows, naive, timer_rows
from tests.petition_steps import LEADER, count_cases, drive, open_petition, run
from tests.scheduler_steps import (
    DAY,
    SHANGHAI,
    T0,
    business_offset,
    fire_at,
    fires_exactly_at,
    local,
    scheduler_events,
    working_days_after,
)

RUNGS = ["supervision_notice", "public_notice", "report_upward"]


@pytest.fixture
def engine(sqlite_url: str, clock: FrozenClock, exact_petition: Path) -> Iterator[Engine]:
    """The petition workflow counting exact durations (see ``exact_petition``)."""
    with Engine(sqlite_url, [exact_petition, COMPLAINT], clock=clock) as e:
        yield e


@pytest.fixture
def any_engine(db_url: str, clock: FrozenClock, exact_petition: Path) -> Iterator[Engine]:
    """``engine`` on each backend in turn."""
    with Engine(db_url, [exact_petition, COMPLAINT], clock=clock) as e:
        yield e


def _cn_engine(workflow: Path, url: str, clock: FrozenClock, **kwargs: object) -> Engine:
    return Engine(url, [workflow], clock=clock, calendars={"petition": "cn_workdays"}, **kwargs)


@pytest.fixture
def cn_clock() -> FrozenClock:
    return FrozenClock(local(2026, 8, 1, 9))


@pytest.fixture
def cn_engine(sqlite_url: str, cn_clock: FrozenClock, exact_petition: Path) -> Iterator[Engine]:
    """The petition workflow counting China's working days (exact durations)."""
    with _cn_engine(exact_petition, sqlite_url, cn_clock) as e:
        yield e


def _assert_scheduler_event(ev: Event, at: datetime) -> None:
    assert (ev.actor, ev.role) == ("scheduler", "system")
    assert ev.at == at
    assert (ev.idempotency_key or "").startswith(f"timer:{ev.case_id}:")


def _assert_warning(ev: Event, *, deadline: str, share: float, due: datetime,
                    deadline_due: datetime) -> None:
    assert (ev.kind, ev.name) == ("warning", f"{deadline}_warning")
    assert ev.details["deadline"] == deadline
    assert ev.details["share"] == share
    assert datetime.fromisoformat(ev.details["due"]) == due
    assert datetime.fromisoformat(ev.details["deadline_due"]) == deadline_due
    _assert_scheduler_event(ev, due)


def _assert_rung(ev: Event, *, level: int, due: datetime, deadline_due: datetime) -> None:
    assert (ev.kind, ev.name) == ("escalation", RUNGS[level - 1])
    assert (ev.details["level"], ev.details["rung"]) == (level, RUNGS[level - 1])
    assert datetime.fromisoformat(ev.details["due"]) == due
    assert datetime.fromisoformat(ev.details["deadline_due"]) == deadline_due
    assert ev.details["overdue_seconds"] == (due - deadline_due).total_seconds()
    _assert_scheduler_event(ev, due)


def _accepted(engine: Engine, clock: FrozenClock, at: datetime) -> str:
    """A case opened and accepted at ``at`` and assigned (handling.investigating)."""
    clock.set(at)
    case = open_petition(engine)
    drive(engine, case.id, "accept", "assign")
    return case.id


# -- calendar days (the workflow as shipped) ------------------------------------------

def test_triage_warnings_and_breach_fire_at_the_exact_calendar_instant(
        engine: Engine, clock: FrozenClock) -> None:
    opened = T0 + timedelta(hours=3, seconds=7, microseconds=123_457)
    clock.set(opened)
    case = open_petition(engine)
    due = opened + 15 * DAY
    [w50] = fires_exactly_at(engine, clock, case.id, opened + 7.5 * DAY)
    _assert_warning(w50, deadline="triage", share=0.5, due=opened + 7.5 * DAY, deadline_due=due)
    [w80] = fires_exactly_at(engine, clock, case.id, opened + 12 * DAY)
    _assert_warning(w80, deadline="triage", share=0.8, due=opened + 12 * DAY, deadline_due=due)
    [breach] = fires_exactly_at(engine, clock, case.id, due)
    _assert_rung(breach, level=1, due=due, deadline_due=due)
    assert engine.get_case(case.id).escalation_level == 1
    assert engine.pending_timers(case.id) == []  # triage does not repeat


def test_handling_warnings_breach_and_each_rung_fire_at_the_exact_calendar_instant(
        any_engine: Engine, clock: FrozenClock) -> None:
    engine = any_engine  # SQLite and PostgreSQL
    accepted = T0 + timedelta(days=1, hours=2, microseconds=654_321)
    case_id = _accepted(engine, clock, accepted)
    due = accepted + 60 * DAY
    [w50] = fires_exactly_at(engine, clock, case_id, accepted + 30 * DAY)
    _assert_warning(w50, deadline="handling", share=0.5, due=accepted + 30 * DAY, deadline_due=due)
    [w80] = fires_exactly_at(engine, clock, case_id, accepted + 48 * DAY)
    _assert_warning(w80, deadline="handling", share=0.8, due=accepted + 48 * DAY, deadline_due=due)
    for level, rung_due in enumerate([due, due + 10 * DAY, due + 20 * DAY], start=1):
        [ev] = fires_exactly_at(engine, clock, case_id, rung_due)
        _assert_rung(ev, level=level, due=rung_due, deadline_due=due)
        assert engine.get_case(case_id).escalation_level == level
    assert fire_at(engine, clock, due + 60 * DAY, case_id) == []  # the ladder's top: no more
    assert engine.get_case(case_id).escalation_level == 3
    assert engine.pending_timers(case_id) == []


def test_timers_are_listed_in_aware_utc_and_stored_as_naive_utc_at_the_due_instant(
        engine: Engine, clock: FrozenClock) -> None:
    accepted = T0 + timedelta(microseconds=1)
    case_id = _accepted(engine, clock, accepted)
    pending = engine.pending_timers(case_id)
    assert all(isinstance(t, Timer) for t in pending)
    assert [(t.kind, t.name, t.due_at, t.status) for t in pending] == [
        (TimerKind.WARNING, "handling", accepted + 30 * DAY, TimerStatus.PENDING),
        (TimerKind.WARNING, "handling", accepted + 48 * DAY, TimerStatus.PENDING),
        (TimerKind.BREACH, "handling", accepted + 60 * DAY, TimerStatus.PENDING),
    ]
    assert all(t.due_at.utcoffset() == timedelta(0) for t in pending)
    assert [t.details["share"] for t in pending if t.kind == "warning"] == [0.5, 0.8]
    # The deadline's three instants are one stored row, due at the first, as naive UTC.
    [row] = timer_rows(engine, case_id, name="handling", status="pending")
    assert row.due_at == naive(accepted + 30 * DAY) and row.due_at.tzinfo is None
    assert {t.id for t in pending} == {row.id}


# -- China's working days across National Day 2026 ------------------------------------

def test_working_day_model_of_the_test_skips_national_day_and_counts_make_up_days() -> None:
    # The expectations below rest on this: 25 Sep (Mid-Autumn) and 1-7 Oct are off,
    # Saturday 10 Oct is a make-up working day.
    opened = local(2026, 9, 24, 15, 30)
    assert working_days_after(opened, 15) == local(2026, 10, 22, 15, 30)
    assert working_days_after(opened, 7.5) == local(2026, 10, 13, 3, 30)
    assert working_days_after(local(2026, 10, 9, 12), 1) == local(2026, 10, 10, 12)
    assert working_days_after(local(2026, 10, 3, 12), 1) == local(2026, 10, 9)


def test_triage_in_working_days_fires_exactly_across_national_day(
        cn_engine: Engine, cn_clock: FrozenClock) -> None:
    opened = local(2026, 9, 24, 15, 30, 0, 250_001)
    cn_clock.set(opened)
    case = open_petition(cn_engine)
    due = working_days_after(opened, 15)
    for share, days in ((0.5, 7.5), (0.8, 12)):
        at = working_days_after(opened, days)
        [w] = fires_exactly_at(cn_engine, cn_clock, case.id, at)
        _assert_warning(w, deadline="triage", share=share, due=at, deadline_due=due)
    [breach] = fires_exactly_at(cn_engine, cn_clock, case.id, due)
    _assert_rung(breach, level=1, due=due, deadline_due=due)


def test_a_deadline_opened_on_a_holiday_starts_counting_on_the_next_working_day(
        cn_engine: Engine, cn_clock: FrozenClock) -> None:
    opened = local(2026, 10, 3, 11, 0)  # a Saturday inside the National Day holiday
    cn_clock.set(opened)
    case = open_petition(cn_engine)
    due = working_days_after(opened, 15)
    assert due == local(2026, 10, 28)  # 15 full working days from 8 October, 00:00
    for share, days in ((0.5, 7.5), (0.8, 12)):
        at = working_days_after(opened, days)
        [w] = fires_exactly_at(cn_engine, cn_clock, case.id, at)
        _assert_warning(w, deadline="triage", share=share, due=at, deadline_due=due)
    [breach] = fires_exactly_at(cn_engine, cn_clock, case.id, due)
    _assert_rung(breach, level=1, due=due, deadline_due=due)


def test_handling_in_working_days_warns_and_breaches_exactly_across_national_day(
        cn_engine: Engine, cn_clock: FrozenClock) -> None:
    accepted = local(2026, 8, 20, 10, 15, 0, 7)
    case_id = _accepted(cn_engine, cn_clock, accepted)
    due = working_days_after(accepted, 60)
    for share, days in ((0.5, 30), (0.8, 48)):
        at = working_days_after(accepted, days)
        [w] = fires_exactly_at(cn_engine, cn_clock, case_id, at)
        _assert_warning(w, deadline="handling", share=share, due=at, deadline_due=due)
    assert working_days_after(accepted, 30).astimezone(SHANGHAI).date().isoformat() == "2026-10-08"
    [breach] = fires_exactly_at(cn_engine, cn_clock, case_id, due)
    _assert_rung(breach, level=1, due=due, deadline_due=due)


def test_escalation_repeats_every_10_days_of_the_workflows_working_day_calendar(
        cn_engine: Engine, cn_clock: FrozenClock) -> None:
    # "repeat: 10d" is 10 days on the workflow's calendar, like "within: 60d".
    accepted = local(2026, 8, 20, 10, 15)
    case_id = _accepted(cn_engine, cn_clock, accepted)
    due = working_days_after(accepted, 60)
    fire_at(cn_engine, cn_clock, due, case_id)
    for level, days in ((2, 70), (3, 80)):
        rung_due = working_days_after(accepted, days)
        [ev] = fires_exactly_at(cn_engine, cn_clock, case_id, rung_due)
        _assert_rung(ev, level=level, due=rung_due, deadline_due=due)


# -- extension, pause, leaving the state ---------------------------------------------

def test_an_extension_moves_the_breach_by_exactly_its_days_and_cancels_the_old_timers(
        engine: Engine, clock: FrozenClock) -> None:
    accepted = T0 + timedelta(hours=5, microseconds=3)
    case_id = _accepted(engine, clock, accepted)
    old = timer_rows(engine, case_id, name="handling")
    clock.set(accepted + 20 * DAY + timedelta(microseconds=11))
    run(engine, case_id, "extend", actor=LEADER, extension_days=20)
    new_due = accepted + 80 * DAY
    assert [t.status for t in timer_rows(engine, case_id, name="handling")][:len(old)] == \
        ["cancelled"] * len(old)
    assert [(t.kind, t.due_at) for t in engine.pending_timers(case_id)] == [
        ("warning", accepted + 40 * DAY),
        ("warning", accepted + 64 * DAY),
        ("breach", new_due),
    ]
    # At the old due instant only the new 50% warning (day 40) has fired; no breach.
    assert [(e.name, e.details["share"]) for e in fire_at(engine, clock, accepted + 60 * DAY, case_id)] \
        == [("handling_warning", 0.5)]
    [w80] = fires_exactly_at(engine, clock, case_id, accepted + 64 * DAY)
    _assert_warning(w80, deadline="handling", share=0.8, due=accepted + 64 * DAY, deadline_due=new_due)
    [breach] = fires_exactly_at(engine, clock, case_id, new_due)
    _assert_rung(breach, level=1, due=new_due, deadline_due=new_due)
    names = [e.name for e in scheduler_events(engine, case_id)]
    assert names == ["handling_warning", "handling_warning", "supervision_notice"]


def test_an_extension_after_a_warning_fired_does_not_fire_that_warning_again(
        engine: Engine, clock: FrozenClock) -> None:
    accepted = T0
    case_id = _accepted(engine, clock, accepted)
    [w50] = fire_at(engine, clock, accepted + 35 * DAY, case_id)
    assert w50.details["share"] == 0.5
    run(engine, case_id, "extend", actor=LEADER, extension_days=20)
    # The new 50% mark (day 40) lies ahead; nothing is due now, nothing is scheduled in the past.
    now = clock.now()
    assert all(t.due_at > now for t in engine.pending_timers(case_id))
    assert fire_at(engine, clock, now, case_id) == []
    assert [t.due_at for t in engine.pending_timers(case_id) if t.kind == "breach"] == [
        accepted + 80 * DAY]


def test_an_extension_after_the_50_percent_mark_of_the_new_total_skips_that_warning(
        engine: Engine, clock: FrozenClock) -> None:
    # Extended on day 45 by 20 days: the new 50% mark (day 40) has passed; only the new
    # 80% mark (day 64) and the breach (day 80) are still to come, and fire on time.
    accepted = T0
    case_id = _accepted(engine, clock, accepted)
    fire_at(engine, clock, accepted + 45 * DAY, case_id)
    run(engine, case_id, "extend", actor=LEADER, extension_days=20)
    assert fire_at(engine, clock, clock.now() + timedelta(seconds=1), case_id) == []
    [w80] = fires_exactly_at(engine, clock, case_id, accepted + 64 * DAY)
    assert w80.details["share"] == 0.8
    [breach] = fires_exactly_at(engine, clock, case_id, accepted + 80 * DAY)
    assert breach.name == "supervision_notice"
    shares = [e.details.get("share") for e in scheduler_events(engine, case_id)]
    assert shares == [0.5, 0.8, None]  # one 50% warning (day 30), one 80% warning (day 64)


def test_a_suspended_clock_resumes_with_exactly_the_time_that_was_left(
        engine: Engine, clock: FrozenClock) -> None:
    accepted = T0 + timedelta(microseconds=500_001)
    case_id = _accepted(engine, clock, accepted)
    suspended = accepted + 10 * DAY + timedelta(hours=3, microseconds=17)
    clock.set(suspended)
    run(engine, case_id, "suspend")
    elapsed = suspended - accepted
    assert [t for t in engine.pending_timers(case_id) if t.name == "handling"] == []
    # While paused, nothing fires, not even at the original due instant.
    assert fire_at(engine, clock, accepted + 90 * DAY, case_id) == []
    resumed = accepted + 90 * DAY + timedelta(minutes=1, microseconds=9)
    clock.set(resumed)
    run(engine, case_id, "resume")
    due = resumed + (60 * DAY - elapsed)
    [w50] = fires_exactly_at(engine, clock, case_id, resumed + (30 * DAY - elapsed))
    _assert_warning(w50, deadline="handling", share=0.5, due=resumed + (30 * DAY - elapsed),
                    deadline_due=due)
    [w80] = fires_exactly_at(engine, clock, case_id, resumed + (48 * DAY - elapsed))
    _assert_warning(w80, deadline="handling", share=0.8, due=resumed + (48 * DAY - elapsed),
                    deadline_due=due)
    [breach] = fires_exactly_at(engine, clock, case_id, due)
    _assert_rung(breach, level=1, due=due, deadline_due=due)


def test_a_warning_passed_before_the_pause_is_not_repeated_after_resume(
        engine: Engine, clock: FrozenClock) -> None:
    accepted = T0
    case_id = _accepted(engine, clock, accepted)
    fire_at(engine, clock, accepted + 35 * DAY, case_id)
    run(engine, case_id, "suspend")
    clock.set(accepted + 50 * DAY)
    run(engine, case_id, "resume")
    assert [(t.kind, t.due_at) for t in engine.pending_timers(case_id)] == [
        ("warning", accepted + 63 * DAY),  # 80%: 13 days of the 25 left
        ("breach", accepted + 75 * DAY),
    ]


def test_an_overdue_case_suspended_and_resumed_climbs_the_next_rung_after_the_time_it_had_left(
        engine: Engine, clock: FrozenClock) -> None:
    # Breached on day 60 (rung 1), next rung due on day 70; suspended on day 65 with five
    # days to go to that rung; resumed on day 80. The paused time does not count, so
    # the next rung comes five days after the resume, not at once.
    case_id = _accepted(engine, clock, T0)
    fire_at(engine, clock, T0 + 65 * DAY, case_id)
    assert engine.get_case(case_id).escalation_level == 1
    run(engine, case_id, "suspend")
    resumed = T0 + 80 * DAY
    clock.set(resumed)
    run(engine, case_id, "resume")
    assert fire_at(engine, clock, resumed, case_id) == []
    assert engine.get_case(case_id).escalation_level == 1
    [rung2] = fires_exactly_at(engine, clock, case_id, resumed + 5 * DAY)
    assert (rung2.name, rung2.details["level"]) == ("public_notice", 2)
    assert rung2.details["overdue_seconds"] > 0  # still overdue since the original breach


def test_a_paused_working_day_clock_resumes_with_the_working_time_left(
        cn_engine: Engine, cn_clock: FrozenClock) -> None:
    accepted = local(2026, 9, 14, 9, 30)
    case_id = _accepted(cn_engine, cn_clock, accepted)
    suspended = local(2026, 9, 30, 12, 0)
    cn_clock.set(suspended)
    run(cn_engine, case_id, "suspend")
    resumed = local(2026, 10, 4, 10, 0)  # resumed during the holiday: counting restarts 8 Oct
    cn_clock.set(resumed)
    run(cn_engine, case_id, "resume")
    elapsed = business_offset(suspended) - business_offset(accepted)
    due = working_days_after(resumed, (60 * DAY - elapsed) / DAY)
    for share, days in ((0.5, 30), (0.8, 48)):
        at = working_days_after(resumed, (days * DAY - elapsed) / DAY)
        [w] = fires_exactly_at(cn_engine, cn_clock, case_id, at)
        _assert_warning(w, deadline="handling", share=share, due=at, deadline_due=due)
    [breach] = fires_exactly_at(cn_engine, cn_clock, case_id, due)
    _assert_rung(breach, level=1, due=due, deadline_due=due)


def test_leaving_registered_cancels_the_triage_timers(engine: Engine, clock: FrozenClock) -> None:
    case = open_petition(engine)
    assert [(t.kind, t.name) for t in engine.pending_timers(case.id)] == [
        ("warning", "triage"), ("warning", "triage"), ("breach", "triage")]
    clock.advance(days=1)
    run(engine, case.id, "accept")
    # The deadline's warnings and breach are one chained row: cancelled once, whole.
    assert [t.status for t in timer_rows(engine, case.id, name="triage")] == ["cancelled"]
    assert {t.name for t in engine.pending_timers(case.id)} == {"handling"}
    fire_at(engine, clock, T0 + 29 * DAY, case.id)
    assert not [e for e in scheduler_events(engine, case.id) if e.details.get("deadline") == "triage"]


def test_a_final_state_stops_the_deadline_and_cancels_its_timers(
        engine: Engine, clock: FrozenClock) -> None:
    case = open_petition(engine)
    run(engine, case.id, "refer")
    assert engine.pending_timers(case.id) == []
    assert fire_at(engine, clock, T0 + 100 * DAY, case.id) == []


def test_replying_stops_the_handling_clock(engine: Engine, clock: FrozenClock) -> None:
    case_id = _accepted(engine, clock, T0)
    clock.set(T0 + 40 * DAY)
    engine.run_due()
    drive(engine, case_id, "decide", "reply")
    assert [t.kind for t in engine.pending_timers(case_id)] == []
    assert fire_at(engine, clock, T0 + 100 * DAY, case_id) == []
    assert engine.get_case(case_id).escalation_level == 0


# -- a clock jumped past many deadlines at once --------------------------------------

N_CASES = 20


def _jump_setup(engine: Engine, clock: FrozenClock) -> list[str]:
    ids = []
    for i in range(N_CASES):
        clock.set(T0 + timedelta(hours=i, microseconds=i))
        case = open_petition(engine)
        drive(engine, case.id, "accept", "assign")
        ids.append(case.id)
    clock.set(T0 + 300 * DAY)
    return ids


def test_a_jump_past_many_deadlines_fires_each_due_timer_exactly_once(
        any_engine: Engine, clock: FrozenClock) -> None:
    ids = _jump_setup(any_engine, clock)
    result = any_engine.run_due()
    assert result.fired > 0
    keys = Counter(r.idempotency_key for r in event_rows(any_engine, actor="scheduler"))
    assert [k for k, n in keys.items() if n != 1] == []
    fired = [t for t in timer_rows(any_engine) if t.status == "fired" and t.case_id is not None]
    case_keys = [k for k in keys if k.startswith("timer:")]
    assert len(case_keys) == len(fired)  # one event per fired case timer, keys all distinct
    assert {k.split(":")[1] for k in case_keys} <= set(ids)
    assert all(k.startswith(("timer:", "cron:")) for k in keys)
    assert [t for t in timer_rows(any_engine, status="pending") if t.due_at <= naive(clock.now())] == []
    for cid in ids:
        evs = scheduler_events(any_engine, cid)
        assert [e.name for e in evs if e.kind == "warning"] == ["handling_warning"] * 2
        assert [e.name for e in evs if e.kind == "escalation"] == RUNGS
        assert [e.details["level"] for e in evs if e.kind == "escalation"] == [1, 2, 3]
        assert any_engine.get_case(cid).escalation_level == 3
    again = any_engine.run_due()
    assert (again.fired, again.skipped) == (0, 0)
    assert Counter(r.idempotency_key for r in event_rows(any_engine, actor="scheduler")) == keys
    assert any_engine.verify() == []


def test_a_jump_past_many_deadlines_fires_each_cases_timers_in_due_order(
        any_engine: Engine, clock: FrozenClock) -> None:
    ids = _jump_setup(any_engine, clock)
    any_engine.run_due()
    for cid in ids:
        dues = [datetime.fromisoformat(e.details["due"]) for e in scheduler_events(any_engine, cid)]
        assert dues == sorted(dues), [
            (e.name, e.details["due"]) for e in scheduler_events(any_engine, cid)]
        # the rungs came before any daily check in June saw the case at level 3
        checks = [e for e in scheduler_events(any_engine, cid) if e.kind == "check"]
        assert checks and all(e.details["escalation_level"] == 3 for e in checks)


# -- years the holiday package does not know -----------------------------------------

def test_a_working_day_deadline_into_an_unknown_year_is_marked_provisional(
        sqlite_url: str, exact_petition: Path) -> None:
    clock = FrozenClock(local(2026, 12, 20, 10))
    with _cn_engine(exact_petition, sqlite_url, clock) as engine:
        case = open_petition(engine)
        [opened] = engine.history(case.id)
        assert opened.details["provisional_deadlines"] == ["triage"]
        assert {t.name for t in engine.pending_timers(case.id)} == {"triage"}


def test_a_working_day_deadline_inside_a_known_year_is_not_provisional(
        sqlite_url: str, exact_petition: Path) -> None:
    clock = FrozenClock(local(2026, 11, 2, 10))
    with _cn_engine(exact_petition, sqlite_url, clock) as engine:
        case = open_petition(engine)
        assert "provisional_deadlines" not in engine.history(case.id)[0].details


def test_strict_calendar_refuses_a_deadline_into_an_unknown_year_and_writes_nothing(
        sqlite_url: str, exact_petition: Path) -> None:
    clock = FrozenClock(local(2026, 12, 20, 10))
    with _cn_engine(exact_petition, sqlite_url, clock, strict_calendar=True) as engine:
        with pytest.raises(UnknownCalendarYear):
            open_petition(engine)
        assert count_cases(engine) == 0
        assert event_rows(engine) == []
        assert [t for t in timer_rows(engine) if t.case_id is not None] == []


def test_strict_calendar_refuses_an_accept_whose_deadline_reaches_an_unknown_year(
        sqlite_url: str, exact_petition: Path) -> None:
    clock = FrozenClock(local(2026, 10, 20, 10))
    with _cn_engine(exact_petition, sqlite_url, clock, strict_calendar=True) as engine:
        case = open_petition(engine)  # triage: 15 working days, inside 2026
        before = engine.history(case.id)
        timers = timer_rows(engine, case.id)
        with pytest.raises(UnknownCalendarYear):
            run(engine, case.id, "accept")  # handling: 60 working days, into 2027
        assert engine.get_case(case.id).state == "registered"
        assert engine.history(case.id) == before
        assert timer_rows(engine, case.id) == timers


def test_recomputing_a_running_deadline_does_not_repeat_fired_warnings(
        engine: Engine, clock: FrozenClock) -> None:
    case_id = _accepted(engine, clock, T0)
    fire_at(engine, clock, T0 + 35 * DAY, case_id)
    assert engine.recompute_deadlines(provisional_only=False) == 1
    assert all(t.due_at > clock.now() for t in engine.pending_timers(case_id))
    assert fire_at(engine, clock, clock.now(), case_id) == []
    assert [t.due_at for t in engine.pending_timers(case_id) if t.kind == "breach"] == [
        T0 + 60 * DAY]



def test_a_clock_kept_by_a_migration_outside_its_state_stops_at_the_next_command(
        sqlite_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    """A case migrated while triage runs into a state triage does not cover keeps the clock;
    the next command, whatever it is, stops it and cancels its timer."""
    with Engine(sqlite_url, [PETITION], clock=clock) as engine:
        case = open_petition(engine)  # registered: the triage clock runs
    v2 = tmp_path / "petition.yaml"  # another version: the same rules, another title
    text = PETITION.read_text(encoding="utf-8")
    v2.write_text(text.replace("\ntitle: ", "\ntitle: v2 ", 1), encoding="utf-8")
    with Engine(sqlite_url, [v2], clock=clock) as engine:
        result = engine.migrate("petition", "latest", {"registered": "handling.investigating"},
                                dry_run=False)
        assert [i.case_id for i in result.moved] == [case.id]
        kept = engine.get_case(case.id)
        assert kept.state == "handling.investigating"
        assert kept.clocks["triage"]["status"] == "running"
        assert {t.name for t in engine.pending_timers(case.id)} == {"triage"}
        engine.assign(case.id, "handler", "wu", actor=LEADER)  # who may suspend it
        clock.advance(days=1)
        run(engine, case.id, "suspend")
        assert engine.get_case(case.id).clocks["triage"]["status"] == "stopped"
        assert engine.pending_timers(case.id) == []
        assert [t.status for t in timer_rows(engine, case.id, name="triage")][-1] == "cancelled"
