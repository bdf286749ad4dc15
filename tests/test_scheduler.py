"""The scheduler around the deadlines: subscribers, cycles, cron reports and checks,
early warning, catch-up after downtime, and sensitive periods."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from casework import (
    CycleCame,
    DeadlineWarned,
    Engine,
    Escalated,
    FlaggedAtRisk,
    FrozenClock,
    ReportReady,
    SensitivePeriod,
)

from tests.conftest import COMPLAINT, PETITION
from tests.helpers import (
    connection,
    event_rows,
    naive,
    report_rows,
    row_dicts,
    table,
    timer_rows,
)
from tests.petition_steps import case_in, open_petition, run
from tests.scheduler_steps import (
    DAY,
    SHANGHAI,
    T0,
    US,
    fire_at,
    fires_exactly_at,
    local,
    scheduler_events,
    working_days_after,
)


@pytest.fixture
def engine(sqlite_url: str, clock: FrozenClock, exact_petition: Path) -> Iterator[Engine]:
    """The petition workflow counting exact durations (see ``exact_petition``)."""
    with Engine(sqlite_url, [exact_petition, COMPLAINT], clock=clock) as e:
        yield e


def _handling_case(engine: Engine, clock: FrozenClock, at: datetime, **assign: Any) -> str:
    clock.set(at)
    case = open_petition(engine)
    run(engine, case.id, "accept")
    run(engine, case.id, "assign", **assign)
    return case.id


# -- subscribers -------------------------------------------------------------------------

def test_warned_and_escalated_subscribers_receive_typed_notices_after_run_due(
        engine: Engine, clock: FrozenClock) -> None:
    warned: list[Any] = []
    escalated: list[Any] = []
    engine.on("warned", warned.append)
    engine.on("escalated", escalated.append)
    case_id = _handling_case(engine, clock, T0)
    fire_at(engine, clock, T0 + 30 * DAY)
    assert [type(n) for n in warned] == [DeadlineWarned] and escalated == []
    assert warned[0].case.id == case_id
    assert (warned[0].event.name, warned[0].event.details["share"]) == ("handling_warning", 0.5)
    fire_at(engine, clock, T0 + 60 * DAY)
    assert [n.event.details["share"] for n in warned] == [0.5, 0.8]
    [esc] = escalated
    assert isinstance(esc, Escalated)
    assert (esc.event.name, esc.event.details["rung"], esc.case.escalation_level) == (
        "supervision_notice", "supervision_notice", 1)


def test_cycle_subscribers_receive_cycle_came(engine: Engine, clock: FrozenClock) -> None:
    got: list[Any] = []
    engine.on("cycle", got.append)
    case = case_in(engine, "follow_up.continued_work")
    fire_at(engine, clock, T0 + 30 * DAY)
    [n] = got
    assert isinstance(n, CycleCame)
    assert (n.case.id, n.event.kind, n.event.name) == (case.id, "cycle", "return_visits")


def test_flagged_subscribers_receive_flagged_at_risk_after_run_due(
        engine: Engine, clock: FrozenClock) -> None:
    got: list[Any] = []
    engine.on("flagged", got.append)
    case = open_petition(engine, petition_count=3)
    engine.run_due()  # no timer is due yet; the notice is delivered all the same
    assert [type(n) for n in got] == [FlaggedAtRisk], "run_due did not deliver the flagged notice"
    [n] = got
    assert isinstance(n, FlaggedAtRisk)
    assert n.case.id == case.id
    assert n.event.details["flagged_at_risk"] == ["repeat_petition"]


def test_flagged_notice_is_delivered_with_the_next_batch_of_timers(
        engine: Engine, clock: FrozenClock) -> None:
    got: list[Any] = []
    engine.on("flagged", got.append)
    open_petition(engine, petition_count=3)
    fire_at(engine, clock, T0 + 8 * DAY)
    assert [type(n) for n in got] == [FlaggedAtRisk]
    assert engine.deliver_notices() == 0  # delivered once, not again


def test_report_subscribers_receive_report_ready(engine: Engine, clock: FrozenClock) -> None:
    got: list[Any] = []
    engine.on("report", got.append)
    fire_at(engine, clock, local(2026, 4, 1, 9))
    [n] = got
    assert isinstance(n, ReportReady)
    assert (n.workflow, n.report, n.at) == ("petition", "supervision", local(2026, 4, 1, 9))


def test_a_raising_subscriber_undoes_nothing_and_the_others_are_still_called(
        engine: Engine, clock: FrozenClock) -> None:
    calls: list[str] = []

    def boom(notice: Any) -> None:
        calls.append("boom")
        raise RuntimeError("subscriber failed")

    engine.on("escalated", boom)
    engine.on("escalated", lambda n: calls.append(f"after:{n.event.name}"))
    engine.on("*", lambda n: calls.append(f"star:{n.name}"))
    engine.on("transition", boom)
    case_id = _handling_case(engine, clock, T0)  # the raising transition subscriber undoes nothing
    assert engine.get_case(case_id).state == "handling.investigating"
    calls.clear()
    result = fire_at(engine, clock, T0 + 60 * DAY, case_id)
    assert [e.name for e in result][-1] == "supervision_notice"
    assert calls.count("boom") == 1
    assert "after:supervision_notice" in calls and "star:escalated" in calls
    assert engine.get_case(case_id).escalation_level == 1
    breach = timer_rows(engine, case_id, kind="breach", name="handling")
    assert [t.status for t in breach] == ["fired", "pending"]  # the next rung is scheduled
    assert engine.deliver_notices() == 0  # the failed delivery is not retried forever
    assert engine.verify() == []


# -- the return-visit cycle -----------------------------------------------------------

def test_return_visits_come_round_every_30_days_while_work_continues(
        engine: Engine, clock: FrozenClock) -> None:
    start = T0 + timedelta(hours=1, microseconds=42)
    clock.set(start)
    case = case_in(engine, "follow_up.continued_work")
    for n in (1, 2, 3):
        [ev] = fires_exactly_at(engine, clock, case.id, start + n * 30 * DAY)
        assert (ev.kind, ev.name, ev.details["cycle"]) == ("cycle", "return_visits", "return_visits")
        assert datetime.fromisoformat(ev.details["due"]) == start + n * 30 * DAY
        assert (ev.idempotency_key or "").startswith(f"timer:{case.id}:cycle:return_visits:")
        assert (ev.actor, ev.role) == ("scheduler", "system")


def test_leaving_continued_work_stops_the_return_visit_cycle(
        engine: Engine, clock: FrozenClock) -> None:
    clock.set(T0)
    case = case_in(engine, "follow_up.continued_work")
    fire_at(engine, clock, T0 + 30 * DAY, case.id)
    clock.set(T0 + 45 * DAY)
    run(engine, case.id, "visit_unsatisfied")  # back to follow_up.visited
    assert [t for t in engine.pending_timers(case.id) if t.kind == "cycle"] == []
    assert [t.status for t in timer_rows(engine, case.id, kind="cycle")] == ["fired", "cancelled"]
    assert fire_at(engine, clock, T0 + 140 * DAY, case.id) == []
    # Entering the state again starts a new cycle from that moment.
    restarted = clock.now()
    run(engine, case.id, "continue_work")
    [ev] = fires_exactly_at(engine, clock, case.id, restarted + 30 * DAY)
    assert ev.kind == "cycle"


def test_return_visits_on_a_working_day_calendar_come_round_every_30_working_days(
        sqlite_url: str, exact_petition: Path) -> None:
    start = local(2026, 9, 1, 10)
    clock = FrozenClock(start)
    with Engine(sqlite_url, [exact_petition], clock=clock,
                calendars={"petition": "cn_workdays"}) as engine:
        case = case_in(engine, "follow_up.continued_work")
        first = working_days_after(start, 30)
        [ev] = fires_exactly_at(engine, clock, case.id, first)
        assert ev.kind == "cycle"


# -- cron: the quarterly supervision report ------------------------------------------

def test_quarterly_inspection_reports_open_and_overdue_cases_per_unit(
        engine: Engine, clock: FrozenClock) -> None:
    reports: list[ReportReady] = []
    engine.on("report", reports.append)
    court_late = _handling_case(engine, clock, T0, unit="county court")
    police_late = _handling_case(engine, clock, T0, unit="city police")
    clock.set(T0)
    closed = case_in(engine, "replied")  # unit "county court", then archived
    run(engine, closed.id, "visit_satisfied")
    run(engine, closed.id, "archive")
    fire_at(engine, clock, local(2026, 3, 20))  # the two early cases are overdue by now
    _handling_case(engine, clock, local(2026, 3, 20), unit="county court")  # due in May
    clock.set(local(2026, 3, 25))
    open_petition(engine)  # registered, no unit yet; triage due 9 April
    when = local(2026, 4, 1, 9)  # cron "0 9 1 1,4,7,10 *" in Asia/Shanghai
    fire_at(engine, clock, when - US)
    assert report_rows(engine) == [] and reports == []
    fire_at(engine, clock, when)
    [row] = report_rows(engine)
    [notice] = reports
    payload = notice.payload
    assert (row.id, row.name, row.workflow) == (notice.report_id, "supervision", "petition")
    assert (payload["cycle"], payload["by"]) == ("quarterly_inspection", "unit")
    assert datetime.fromisoformat(payload["due"]) == when
    by_unit = {r["unit"]: (r["open"], r["overdue"]) for r in payload["rows"]}
    assert by_unit == {"county court": (2, 1), "city police": (1, 1), None: (1, 0)}
    assert (payload["open"], payload["overdue"]) == (4, 2)
    assert engine.get_case(court_late).escalation_level == 3
    assert engine.get_case(police_late).escalation_level == 3
    # The next quarter is scheduled, once.
    [nxt] = [t for t in timer_rows(engine, status="pending") if t.name == "quarterly_inspection"]
    assert nxt.due_at == naive(local(2026, 7, 1, 9))
    fire_at(engine, clock, when)
    assert len(report_rows(engine)) == 1


# -- cron: checks inside a window, and inside sensitive periods ------------------------

def _check_days(engine: Engine, case_id: str, name: str) -> list[date]:
    return [datetime.fromisoformat(e.details["due"]).astimezone(SHANGHAI).date()
            for e in scheduler_events(engine, case_id) if e.kind == "check" and e.name == name]


def test_campaign_daily_check_looks_at_overdue_cases_only_inside_its_window(
        engine: Engine, clock: FrozenClock) -> None:
    late = _handling_case(engine, clock, T0)
    fire_at(engine, clock, local(2026, 5, 20))  # late is overdue (breached 6 March)
    on_time = _handling_case(engine, clock, local(2026, 5, 20))  # due 19 July
    fire_at(engine, clock, local(2026, 5, 31, 8))
    assert _check_days(engine, late, "campaign_daily_check") == []
    first = local(2026, 6, 1, 8)  # cron "0 8 * * *", between 2026-06-01 and 2026-06-30
    [check] = fires_exactly_at(engine, clock, late, first)
    assert (check.kind, check.name, check.details["check"]) == ("check", "campaign_daily_check", "overdue")
    assert (check.idempotency_key or "").startswith("cron:petition:campaign_daily_check:")
    assert (check.idempotency_key or "").endswith(f":{late}")
    assert check.details["escalation_level"] == 3
    fire_at(engine, clock, local(2026, 7, 5))
    june = [date(2026, 6, d) for d in range(1, 31)]
    assert _check_days(engine, late, "campaign_daily_check") == june
    assert _check_days(engine, on_time, "campaign_daily_check") == []
    assert [t for t in timer_rows(engine, status="pending") if t.name == "campaign_daily_check"] == []


@pytest.fixture
def sessions_engine(sqlite_url: str, clock: FrozenClock, exact_petition: Path) -> Iterator[Engine]:
    period = SensitivePeriod("national_sessions", date(2026, 3, 1), date(2026, 3, 20), 0.8)
    with Engine(sqlite_url, [exact_petition], clock=clock, sensitive_periods=[period]) as e:
        yield e


def test_sensitive_period_check_runs_only_inside_the_period_on_cases_at_risk(
        sessions_engine: Engine, clock: FrozenClock) -> None:
    engine = sessions_engine
    risky = open_petition(engine, petition_count=4)
    calm = open_petition(engine)
    fire_at(engine, clock, local(2026, 2, 28, 12))
    assert _check_days(engine, risky.id, "sensitive_period_check") == []
    [check] = fires_exactly_at(engine, clock, risky.id, local(2026, 3, 1, 8))
    assert (check.name, check.details["check"]) == ("sensitive_period_check", "at_risk")
    fire_at(engine, clock, local(2026, 5, 1))
    assert _check_days(engine, risky.id, "sensitive_period_check") == [
        date(2026, 3, d) for d in range(1, 21)]
    assert _check_days(engine, calm.id, "sensitive_period_check") == []


def test_without_sensitive_periods_the_sensitive_check_never_runs(
        engine: Engine, clock: FrozenClock) -> None:
    risky = open_petition(engine, petition_count=4)
    fire_at(engine, clock, local(2026, 12, 31))
    assert _check_days(engine, risky.id, "sensitive_period_check") == []
    assert [t for t in timer_rows(engine) if t.name == "sensitive_period_check"] == []


def test_a_sensitive_period_makes_a_warning_come_earlier(
        sessions_engine: Engine, clock: FrozenClock) -> None:
    accepted = local(2026, 2, 1, 8)
    case_id = _handling_case(sessions_engine, clock, accepted)
    # 50%: moved to 0.5 x 0.8 x 60 days = 24 days (25 Feb), outside the period: stays at day 30.
    [w50] = fires_exactly_at(sessions_engine, clock, case_id, accepted + 30 * DAY)
    assert w50.details["share"] == 0.5
    # 80%: moved to 0.8 x 0.8 x 60 days = 38.4 days (11 March), inside the period.
    early = accepted + timedelta(days=38.4)
    [w80] = fires_exactly_at(sessions_engine, clock, case_id, early)
    assert w80.details["share"] == 0.8
    assert datetime.fromisoformat(w80.details["due"]) == early
    assert fire_at(sessions_engine, clock, accepted + 48 * DAY, case_id) == []


def test_outside_sensitive_periods_the_warning_comes_at_its_share(
        engine: Engine, clock: FrozenClock) -> None:
    accepted = local(2026, 2, 1, 8)
    case_id = _handling_case(engine, clock, accepted)
    fire_at(engine, clock, accepted + 30 * DAY, case_id)
    assert fire_at(engine, clock, accepted + timedelta(days=38.4), case_id) == []
    [w80] = fires_exactly_at(engine, clock, case_id, accepted + 48 * DAY)
    assert w80.details["share"] == 0.8


# -- early warning -------------------------------------------------------------------

def _at_risk_ids(engine: Engine, *cases: Any) -> list[str]:
    """The ones of ``cases`` the engine holds as flagged at risk."""
    return [c.id for c in cases if engine.get_case(c.id).at_risk]


def test_a_petitioner_with_three_petitions_is_flagged_at_risk_at_open(engine: Engine) -> None:
    flagged = open_petition(engine, petition_count=3)
    plain = open_petition(engine, petition_count=2)
    assert engine.history(flagged.id)[0].details["flagged_at_risk"] == ["repeat_petition"]
    assert "flagged_at_risk" not in engine.history(plain.id)[0].details
    assert _at_risk_ids(engine, flagged, plain) == [flagged.id]


def test_the_third_case_of_the_same_petitioner_is_flagged(engine: Engine) -> None:
    first = open_petition(engine, petitioner_id_number="110101198001010011")
    run(engine, first.id, "refer")  # closed cases count too
    second = open_petition(engine, petitioner_id_number="110101198001010011")
    other = open_petition(engine, petitioner_id_number="110101199002020022")
    third = open_petition(engine, petitioner_id_number="110101198001010011")
    details = {c.id: engine.history(c.id)[0].details for c in (first, second, other, third)}
    assert details[third.id]["flagged_at_risk"] == ["repeat_petition"]
    assert all("flagged_at_risk" not in details[c.id] for c in (first, second, other))
    assert _at_risk_ids(engine, first, second, other, third) == [third.id]


def test_group_petitions_and_threats_are_flagged(engine: Engine) -> None:
    group = open_petition(engine, group_petition=True)
    threat = open_petition(engine, threatens_higher_visit=True)
    assert engine.history(group.id)[0].details["flagged_at_risk"] == ["group_petition"]
    assert engine.history(threat.id)[0].details["flagged_at_risk"] == ["threatened_higher_visit"]


# -- catch-up after downtime ---------------------------------------------------------

def _open_staggered(url: str, n: int) -> list[str]:
    """Engine A opens ``n`` cases an hour apart from T0, then stops."""
    clock = FrozenClock(T0)
    ids = []
    with Engine(url, [PETITION], clock=clock) as a:
        for i in range(n):
            clock.set(T0 + timedelta(hours=i, minutes=7 * i))
            ids.append(open_petition(a).id)
        assert a.run_due().fired == 0
    return ids


def _assert_caught_up(engine: Engine, ids: list[str], now: datetime) -> None:
    rows = event_rows(engine, actor="scheduler")
    dues = [datetime.fromisoformat(json.loads(r.details)["due"]) for r in rows]
    assert len(rows) == 3 * len(ids)  # two warnings and the breach of each case's triage
    assert dues == sorted(dues)  # oldest first
    fired = [t for t in timer_rows(engine) if t.case_id is not None]
    assert all(t.status == "fired" for t in fired) and len(fired) == len(rows)
    keys = [r.idempotency_key for r in rows]
    assert len(set(keys)) == len(fired) and all(k.startswith("timer:") for k in keys)
    assert all(r.at == naive(now) for r in rows)
    for cid in ids:
        assert [e.kind for e in scheduler_events(engine, cid)] == ["warning", "warning", "escalation"]
    assert engine.verify() == []


def test_timers_due_while_no_engine_ran_fire_at_the_next_run_oldest_first(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    ids = _open_staggered(url, 6)
    later = T0 + 20 * DAY
    with Engine(url, [PETITION], clock=FrozenClock(later)) as b:
        result = b.run_due()
        assert result.by_kind == {"warning": 12, "breach": 6}
        _assert_caught_up(b, ids, later)
        assert b.run_due().fired == 0


def test_timers_due_while_no_engine_ran_fire_when_the_background_scheduler_starts(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    ids = _open_staggered(url, 4)
    later = T0 + 20 * DAY
    with Engine(url, [PETITION], clock=FrozenClock(later)) as b:
        service = b.start_scheduler(interval_seconds=3600)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not any(t.due_at <= later for cid in ids for t in b.pending_timers(cid)):
                break
            time.sleep(0.02)
        b.stop_scheduler()
        assert service.last is not None and service.last.fired == 12
        _assert_caught_up(b, ids, later)


def test_a_chained_timer_that_already_fired_still_hands_on_its_later_instants(
        engine: Engine, clock: FrozenClock) -> None:
    """A copy of a fired chained row without its successor (as an import could leave it):
    its event exists, so it is only marked fired, and the deadline's next instants go on."""
    case = open_petition(engine)
    fire_at(engine, clock, T0 + 8 * DAY, case.id)  # triage's first warning (50% of 15 days)
    first, successor = row_dicts(engine, "timers", "id", case_id=case.id, name="triage")
    assert (first["status"], successor["status"]) == ("fired", "pending")
    copy = {k: v for k, v in first.items() if k not in ("id", "fired_at", "claimed_by",
                                                        "lease_until")} | {"status": "pending"}
    with connection(engine) as conn:
        timers = table(conn, "timers")
        conn.execute(timers.delete().where(timers.c.id == successor["id"]))
        conn.execute(timers.insert().values(copy))
    fire_at(engine, clock, T0 + 30 * DAY, case.id)
    names = [e.name for e in scheduler_events(engine, case.id)]
    assert names == ["triage_warning", "triage_warning", "supervision_notice"]
    assert engine.verify() == []
