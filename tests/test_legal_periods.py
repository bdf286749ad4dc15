"""Periods counted as the law counts them (Civil Code arts. 201-203), exact to the second in
Asia/Shanghai: statutory deadlines and windows, calendars kept by their clocks, declared
years, and what-if."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from casework import (
    DeclaredYear,
    Engine,
    FrozenClock,
    Proposal,
    WindowClosed,
)

from tests.conftest import PETITION
from tests.petition_steps import CLERK, LEADER, OPEN_DATA, drive, open_petition

TZ = ZoneInfo("Asia/Shanghai")


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=TZ)


def breach_of(engine: Engine, case_id: str, deadline: str = "triage") -> datetime:
    (due,) = [t.due_at for t in engine.pending_timers(case_id)
              if t.kind == "breach" and t.name == deadline]
    return due.astimezone(TZ)


def _exact_petition(tmp_path: Path) -> Path:
    out = tmp_path / "petition.yaml"
    out.write_text(PETITION.read_text(encoding="utf-8").replace(
        "counting: statutory\n", "counting: exact\n"), encoding="utf-8")
    return out


# -- statutory deadlines ---------------------------------------------------------------------
@pytest.mark.parametrize("received", [at(2025, 3, 3, 0, 0, 0), at(2025, 3, 3, 10, 0),
                                      at(2025, 3, 3, 23, 59, 59)])
def test_a_fifteen_day_period_ends_at_the_end_of_its_fifteenth_day_not_counting_the_first(
        sqlite_url: str, received: datetime) -> None:
    with Engine(sqlite_url, [PETITION], clock=FrozenClock(received)) as e:
        case = open_petition(e)
        assert breach_of(e, case.id) == at(2025, 3, 19)  # 24:00 on 18 March


def test_a_last_day_in_the_national_day_week_moves_to_the_first_working_day_after_it(
        sqlite_url: str) -> None:
    with Engine(sqlite_url, [PETITION], clock=FrozenClock(at(2025, 9, 20, 10))) as e:
        case = open_petition(e)  # the 15th day is 5 October, inside 1-8 October
        assert breach_of(e, case.id) == at(2025, 10, 10)  # 24:00 on 9 October


def test_a_last_day_on_a_saturday_that_is_a_make_up_working_day_does_not_move(
        sqlite_url: str) -> None:
    with Engine(sqlite_url, [PETITION], clock=FrozenClock(at(2025, 9, 26, 9))) as e:
        case = open_petition(e)  # the 15th day is Saturday 11 October, a working day in 2025
        assert breach_of(e, case.id) == at(2025, 10, 12)


def test_the_same_periods_counted_exactly_are_durations_from_the_instant(
        sqlite_url: str, tmp_path: Path) -> None:
    with Engine(sqlite_url, [_exact_petition(tmp_path)],
                clock=FrozenClock(at(2025, 9, 20, 10))) as e:
        case = open_petition(e)
        assert breach_of(e, case.id) == at(2025, 10, 5, 10)


def test_a_closing_time_ends_the_last_day_at_the_close_of_business(sqlite_url: str) -> None:
    from datetime import time

    with Engine(sqlite_url, [PETITION], clock=FrozenClock(at(2025, 3, 3, 10)),
                closing_times={"petition": time(17, 30)}) as e:
        case = open_petition(e)
        assert breach_of(e, case.id) == at(2025, 3, 18, 17, 30)


def test_warnings_and_the_breach_fire_at_their_instants_not_a_second_early(
        any_engine: Engine, clock: FrozenClock) -> None:
    clock.set(at(2025, 3, 3, 10))
    case = open_petition(any_engine)
    end = at(2025, 3, 19)
    start = at(2025, 3, 3, 10)
    half = start + (end - start) / 2
    for instant, kind in ((half, "warning"), (end, "breach")):
        clock.set(instant - timedelta(seconds=1))
        any_engine.run_due()
        before = [e for e in any_engine.history(case.id) if e.kind in ("warning", "escalation",
                                                                        "breach")]
        clock.set(instant)
        any_engine.run_due()
        after = [e for e in any_engine.history(case.id) if e.kind in ("warning", "escalation",
                                                                       "breach")]
        assert len(after) == len(before) + 1, kind
        assert after[-1].at == instant


# -- windows --------------------------------------------------------------------------------
def _replied_at(engine: Engine, clock: FrozenClock, when: datetime) -> str:
    case = open_petition(engine)
    drive(engine, case.id, "accept", "assign", "decide")
    clock.set(when)
    drive(engine, case.id, "reply")
    return case.id


def test_a_review_may_be_asked_in_the_last_minute_of_the_window(
        any_engine: Engine, clock: FrozenClock) -> None:
    clock.set(at(2025, 5, 20, 9))
    cid = _replied_at(any_engine, clock, at(2025, 6, 1, 10))
    # 30 days from 1 June: the start day not counted, the 30th day is 1 July.
    clock.set(at(2025, 7, 1, 23, 59))
    assert any_engine.fire(cid, "request_review", actor=CLERK).state == "review.requested"


def test_a_review_asked_a_second_after_the_window_closed_is_refused_naming_it(
        any_engine: Engine, clock: FrozenClock) -> None:
    clock.set(at(2025, 5, 20, 9))
    cid = _replied_at(any_engine, clock, at(2025, 6, 1, 10))
    options = {o.name: o for o in any_engine.available_triggers(cid, CLERK)}
    assert options["request_review"].window == "review_request"
    assert options["request_review"].window_closes == at(2025, 7, 2)
    clock.set(at(2025, 7, 2, 0, 0, 1))
    before = any_engine.get_case(cid)
    with pytest.raises(WindowClosed) as err:
        any_engine.fire(cid, "request_review", actor=CLERK)
    assert "review_request" in str(err.value) and "2025-07-02T00:00:00+08:00" in str(err.value)
    assert any_engine.get_case(cid) == before
    assert not next(o for o in any_engine.available_triggers(cid, CLERK)
                    if o.name == "request_review").allowed


def test_the_rereview_window_opens_at_the_reviews_answer(
        any_engine: Engine, clock: FrozenClock) -> None:
    clock.set(at(2025, 5, 20, 9))
    cid = _replied_at(any_engine, clock, at(2025, 6, 1, 10))
    any_engine.fire(cid, "request_review", actor=CLERK)
    clock.set(at(2025, 6, 18, 15))
    any_engine.fire(cid, "answer_review", actor="reviewer:qian", data={"review_result": "upheld"})
    clock.set(at(2025, 7, 18, 23, 59, 59))  # the 30th day after 18 June
    assert any_engine.fire(cid, "request_rereview", actor=CLERK).state == "review.rereview_requested"


def test_a_rereview_a_second_late_is_refused(any_engine: Engine, clock: FrozenClock) -> None:
    clock.set(at(2025, 5, 20, 9))
    cid = _replied_at(any_engine, clock, at(2025, 6, 1, 10))
    any_engine.fire(cid, "request_review", actor=CLERK)
    clock.set(at(2025, 6, 18, 15))  # the 30th day after is Friday 18 July
    any_engine.fire(cid, "answer_review", actor="reviewer:qian", data={"review_result": "upheld"})
    clock.set(at(2025, 7, 19, 0, 0, 1))
    with pytest.raises(WindowClosed, match="rereview_request"):
        any_engine.fire(cid, "request_rereview", actor=CLERK)


def test_a_window_whose_last_day_is_a_sunday_stays_open_to_the_monday(
        any_engine: Engine, clock: FrozenClock) -> None:
    clock.set(at(2025, 5, 20, 9))
    cid = _replied_at(any_engine, clock, at(2025, 6, 1, 10))
    any_engine.fire(cid, "request_review", actor=CLERK)
    clock.set(at(2025, 6, 20, 15))  # the 30th day after is Sunday 20 July
    any_engine.fire(cid, "answer_review", actor="reviewer:qian", data={"review_result": "upheld"})
    clock.set(at(2025, 7, 21, 23, 59))
    assert any_engine.fire(cid, "request_rereview", actor=CLERK).state == "review.rereview_requested"


# -- a clock keeps its calendar ---------------------------------------------------------------
def test_recomputing_with_settings_naming_another_calendar_leaves_each_clock_on_its_own(
        sqlite_url: str) -> None:
    clock = FrozenClock(at(2026, 12, 21, 10))
    with Engine(sqlite_url, [PETITION], clock=clock, calendars={"petition": "cn_workdays"}) as e:
        case = open_petition(e)
        due = breach_of(e, case.id)
        assert e.deadlines(case.id)[0].provisional
    with Engine(sqlite_url, [PETITION], clock=clock, calendars={"petition": "calendar"}) as e:
        e.recompute_deadlines(provisional_only=False)
        (triage,) = e.deadlines(case.id)
        assert triage.calendar == "cn_workdays" and triage.provisional
        assert breach_of(e, case.id) == due


def test_a_declared_year_moves_a_provisional_deadline_off_its_holidays(sqlite_url: str) -> None:
    clock = FrozenClock(at(2026, 12, 21, 10))
    with Engine(sqlite_url, [PETITION], clock=clock, calendars={"petition": "cn_workdays"}) as e:
        case = open_petition(e)
        # Working days from 22 December, 1 January guessed as a working day: the 15th is 11 Jan.
        assert breach_of(e, case.id) == at(2027, 1, 12)
    declared = DeclaredYear(2027, frozenset({date(2027, 1, 1), date(2027, 1, 4)}),
                            frozenset({date(2027, 1, 9)}))
    with Engine(sqlite_url, [PETITION], clock=clock, calendars={"petition": "cn_workdays"},
                declared_years={2027: declared}) as e:
        assert e.recompute_deadlines() == 1
        # 1 and 4 January off, Saturday 9 January worked: the 15th working day is 12 January.
        assert breach_of(e, case.id) == at(2027, 1, 13)
        (triage,) = e.deadlines(case.id)
        assert not triage.provisional
        last = e.history(case.id)[-1]
        assert last.details["counted_on_declared_calendar"] == {"triage": [2027]}
    declared = DeclaredYear(2027, frozenset({date(2027, 1, 1), date(2027, 1, 4),
                                             date(2027, 1, 5)}), frozenset())
    with Engine(sqlite_url, [PETITION], clock=clock, calendars={"petition": "cn_workdays"},
                declared_years={2027: declared}) as e:
        e.recompute_deadlines(provisional_only=False)
        assert breach_of(e, case.id) == at(2027, 1, 15)  # three days off: the 15th is 14 Jan


def test_a_declared_schedule_that_disagrees_with_the_package_is_reported(sqlite_url: str) -> None:
    wrong = DeclaredYear(2025, frozenset({date(2025, 10, 9)}), frozenset({date(2025, 10, 1)}))
    with Engine(sqlite_url, [PETITION], declared_years={2025: wrong}) as e:
        problems = e.calendar_problems()
    assert any("2025-10-09" in p and "declared a day off" in p for p in problems)
    assert any("2025-10-01" in p and "declared a working day" in p for p in problems)


# -- both elapsed times ------------------------------------------------------------------------
def test_a_paused_clock_shows_its_stretches_and_both_elapsed_times(
        any_engine: Engine, clock: FrozenClock) -> None:
    clock.set(at(2025, 3, 3, 10))
    case = open_petition(any_engine)
    drive(any_engine, case.id, "accept", "assign")
    clock.advance(days=5)
    any_engine.fire(case.id, "suspend", actor=LEADER, data={"suspension_reason": "abroad"})
    clock.advance(days=10)
    any_engine.fire(case.id, "resume", actor=LEADER)
    clock.advance(days=1)
    (handling,) = [d for d in any_engine.deadlines(case.id) if d.name == "handling"]
    assert handling.status == "running"
    assert handling.business_elapsed == timedelta(days=6)
    assert handling.actual_elapsed == timedelta(days=16)
    assert len(handling.paused) == 1 and handling.paused[0][1] is not None
    assert handling.paused[0][1] - handling.paused[0][0] == timedelta(days=10)


# -- what-if -----------------------------------------------------------------------------------
def _in_handling(engine: Engine, clock: FrozenClock) -> str:
    clock.set(at(2025, 3, 3, 10))
    case = open_petition(engine)
    drive(engine, case.id, "accept", "assign")
    return case.id


def _trail(events: Any) -> list[tuple[str, str, datetime]]:
    return [(e.kind, e.name, e.at) for e in events]


def test_what_if_writes_nothing(any_engine: Engine, clock: FrozenClock) -> None:
    cid = _in_handling(any_engine, clock)
    before = (any_engine.get_case(cid), any_engine.history(cid), any_engine.pending_timers(cid))
    counts = any_engine.stored_counts()
    answer = any_engine.what_if(cid, [Proposal("extend", LEADER, {
        "extension_days": 30, "extension_reason": "complex"})], until=at(2025, 8, 1))
    assert answer.proposed.events and answer.unchanged.events
    assert (any_engine.get_case(cid), any_engine.history(cid),
            any_engine.pending_timers(cid)) == before
    assert any_engine.stored_counts() == counts
    assert any_engine.verify() == []


def test_what_if_foretells_what_then_happens(any_engine: Engine, clock: FrozenClock) -> None:
    cid = _in_handling(any_engine, clock)
    until = at(2025, 7, 1)
    extend = Proposal("extend", LEADER, {"extension_days": 30, "extension_reason": "complex"},
                      at=at(2025, 4, 1, 9))
    answer = any_engine.what_if(cid, [extend], until=until)
    assert answer.proposed.escalations[0].at > answer.unchanged.escalations[0].at
    # Now for real: the same command at the same instant, the scheduler at each due instant.
    known = len(any_engine.history(cid))

    def advance(to: datetime) -> None:
        while True:
            due = [t.due_at for t in any_engine.pending_timers(cid) if t.due_at <= to]
            if not due:
                break
            clock.set(max(min(due), clock.now()))
            any_engine.run_due()
        clock.set(to)
        any_engine.run_due()

    advance(extend.at)  # type: ignore[arg-type]
    any_engine.fire(cid, "extend", actor=LEADER, data=extend.data)
    advance(until)
    real = any_engine.history(cid)[known:]
    assert _trail(real) == _trail(answer.proposed.events)
    assert any_engine.deadlines(cid) == list(answer.proposed.deadlines)


def test_a_refused_proposal_is_reported_with_its_rule(any_engine: Engine, clock: FrozenClock) -> None:
    cid = _in_handling(any_engine, clock)
    answer = any_engine.what_if(cid, [Proposal("extend", "leader:ma", {
        "extension_days": 30, "extension_reason": "x"})], until=at(2025, 6, 1))
    assert answer.proposed.refused is not None
    assert "[scope]" in answer.proposed.refused[1]
    assert OPEN_DATA["petitioner_name"] not in answer.proposed.refused[1]


def test_reports_give_the_time_to_resolve_in_calendar_and_working_days(
        sqlite_url: str) -> None:
    clock = FrozenClock(at(2025, 9, 26, 9))  # Friday; the National Day week follows
    with Engine(sqlite_url, [PETITION], clock=clock) as e:
        case = open_petition(e)
        clock.set(at(2025, 10, 10, 9))  # two weeks later, National Day week in between
        e.fire(case.id, "not_accept", actor="triage:zhao",
               data={"triage_reason": "already concluded"})
        rep = e.report("petition").as_dict()["time_to_resolve"]["all"]
    assert rep["cases"] == 1
    assert rep["average_calendar_days"] == 14.0
    # Working days: 26 Sep (from 09:00), 28 Sep and 29-30 Sep, 9 Oct and 10 Oct to 09:00;
    # 1-8 October are days off, 11 October a make-up working day not yet reached.
    assert rep["average_working_days"] == pytest.approx(15 / 24 + 3 + 1 + 9 / 24)


def test_the_workday_index_agrees_with_the_calendar_to_the_second() -> None:
    import random

    from casework.calendars import WorkdayIndex, business_seconds, make_calendar

    cal = make_calendar("cn_workdays")
    index = WorkdayIndex(cal, date(2025, 1, 1), date(2026, 12, 31))
    rng = random.Random(7)
    start = at(2025, 1, 1)
    for _ in range(300):
        a = start + timedelta(seconds=rng.randrange(0, 600 * 86400))
        b = a + timedelta(seconds=rng.randrange(0, 90 * 86400))
        assert index.seconds(a, b) == pytest.approx(business_seconds(cal, a, b)[0])
