"""Reports: each figure checked against a small scenario worked out by hand, on both databases.

The scenario (all in January-March 2026, Beijing time; the clock starts Monday 5 January):

  case  source        unit  head  what happens                                   end state
  p1    province      A     yes   accept d1, assign d2, meeting d3, funds 1000 d4,   archived d20
                                  decide d10, reply d11, visit satisfied d19
  p2    province      A     no    accept d1, assign d2, never decided:               handling (overdue)
                                  the 60-day handling deadline (from accept) breaks
                                  on d61 -> one escalation (supervision_notice)
  p3    province      B     no    not accepted d2                                    not_accepted
  p4    direct        B     no    accept d1, assign d2, funds 500 d5, decide d6,      review.requested
                                  reply d7, review asked d9
  p5    carried_over  C     no    nothing                                            registered

The report runs at d70 (triage of p5 (15 days) broke on d15 -> one escalation; p4's
review answer deadline (30 days from d9) broke on d39 -> one escalation).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from casework import Engine, FrozenClock
from casework.views import report_table

from tests.conftest import PETITION, assert_reports_agree

START = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
FIXES = {"handler": "wu", "due_date": "2026-03-06", "target": "resolve"}




def _petition_with_unit_at_open(tmp_path: Path) -> Path:
    """The petition workflow whose registration may already name the responsible unit (so
    that cases never assigned, one refused and one still registered, count for a unit),
    its periods counted exactly (so that the times overdue below are whole days)."""
    text = PETITION.read_text(encoding="utf-8")
    marker = "  optional: [petitioner_id_number,"
    assert marker in text and "counting: statutory\n" in text
    out = tmp_path / "petition.yaml"
    out.write_text(text.replace(marker, "  optional: [unit, petitioner_id_number,", 1)
                   .replace("counting: statutory\n", "counting: exact\n"), encoding="utf-8")
    return out


@pytest.fixture
def reported(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    clock = FrozenClock(START)
    with Engine(db_url, [_petition_with_unit_at_open(tmp_path)], clock=clock) as e:
        ids: dict[str, str] = {}
        for name, source, unit, head in (("p1", "province", "A", True), ("p2", "province", "A", False),
                                         ("p3", "province", "B", False), ("p4", "direct", "B", False),
                                         ("p5", "carried_over", "C", False)):
            ids[name] = e.open_case("petition", {
                "petitioner_name": name, "channel": "visit", "source": source, "summary": "s",
                "received_by_head": head, "unit": unit}, actor="clerk:li").id
        plan = [
            (1, "p1", "accept", "triage:z", {}), (1, "p2", "accept", "triage:z", {}),
            (1, "p4", "accept", "triage:z", {}),
            (2, "p1", "assign", "leader:a1", {"leader": "a1", "unit": "A", **FIXES}),
            (2, "p2", "assign", "leader:a2", {"leader": "a2", "unit": "A", **FIXES}),
            (2, "p4", "assign", "leader:b1", {"leader": "b1", "unit": "B", **FIXES}),
            (2, "p3", "not_accept", "triage:z", {"triage_reason": "concluded before"}),
            (3, "p1", "coordination_meeting", "leader:a1", {"attendees": ["A", "X"], "agreed": "pay"}),
            (4, "p1", "funds_raised", "leader:a1", {"amount": 1000}),
            (5, "p4", "funds_raised", "leader:b1", {"amount": 500}),
            (6, "p4", "decide", "leader:b1", {"outcome": "maintained", "decision_summary": "x"}),
            (7, "p4", "reply", "handler:wu", {"reply_summary": "x"}),
            (9, "p4", "request_review", "clerk:li", {}),
            (10, "p1", "decide", "leader:a1", {"outcome": "full_correction", "decision_summary": "x"}),
            (11, "p1", "reply", "handler:wu", {"reply_summary": "x"}),
            (19, "p1", "return_visit", "handler:wu", {"satisfaction": "satisfied"}),
            (20, "p1", "archive", "archivist:c", {}),
        ]
        for day, case, trigger, actor, data in plan:
            clock.set(START + timedelta(days=day))
            e.run_due()
            e.fire(ids[case], trigger, actor=actor, data=data)
        clock.set(START + timedelta(days=70))
        e.run_due()
        yield e


def test_figures_for_all_cases(reported: Engine) -> None:
    t = reported.report("petition").totals
    assert t["received"] == 5
    assert t["handed_down"] == 3
    assert t["received_by_head"] == 1
    assert t["accepted"] == 3
    assert t["concluded"] == 2  # p1 archived, p3 not accepted
    assert t["resolved"] == 1
    assert t["resolved_first_time"] == 1
    assert t["in_progress"] == 3  # p2, p4, p5
    assert t["closure_rate"] == pytest.approx(1 / 5)
    assert t["coordination_meetings"] == 1
    assert t["home_visits"] == 0
    assert t["funds_raised"] == 1500
    assert t["overdue"] == 3  # p2 (handling), p4 (review answer), p5 (triage)
    assert t["escalations"] == 3


def test_overdue_cases_and_how_long(reported: Engine) -> None:
    rep = reported.report("petition")
    n, avg, longest = rep.overdue
    # p5: triage due d15 -> 55 days; p4: review answer due d39 -> 31 days;
    # p2: handling due d61 (60 days from accept on d1) -> 9 days.
    assert n == 3
    assert longest == pytest.approx(55, abs=0.01)
    assert avg == pytest.approx((55 + 31 + 9) / 3, abs=0.01)
    assert rep.escalations == {"supervision_notice": 3}


def test_figures_for_the_handed_down_cases(reported: Engine) -> None:
    t = reported.report("petition", where={"source": "handed_down"}).totals
    assert (t["received"], t["resolved"], t["in_progress"], t["concluded"]) == (3, 1, 1, 2)
    assert t["closure_rate"] == pytest.approx(1 / 3)


def test_figures_per_unit_and_per_source(reported: Engine) -> None:
    rows = reported.report("petition", by="unit").rows
    assert set(rows) == {"A", "B", "C"}
    assert (rows["A"]["received"], rows["A"]["resolved"], rows["A"]["in_progress"]) == (2, 1, 1)
    assert (rows["B"]["received"], rows["B"]["concluded"], rows["B"]["in_progress"]) == (2, 1, 1)
    assert rows["B"]["funds_raised"] == 500 and rows["A"]["funds_raised"] == 1000
    assert rows["C"]["closure_rate"] == 0
    by_source = reported.report("petition", by="source").rows
    assert by_source["province"]["received"] == 3
    assert by_source["direct"]["in_progress"] == 1
    assert by_source["carried_over"]["overdue"] == 1


def test_a_period_counts_only_what_happened_in_it(reported: Engine) -> None:
    # 5-12 January 2026 (days 0..6 from the start): the five cases were received, three
    # accepted, p3 concluded; p1 was archived later, so it is still in progress at the end.
    t = reported.report("petition", start="2026-01-05", end="2026-01-12").totals
    assert t["received"] == 5
    assert t["accepted"] == 3
    assert t["concluded"] == 1
    assert t["resolved"] == 0
    assert t["in_progress"] == 4
    assert t["funds_raised"] == 1500
    later = reported.report("petition", start="2026-01-12", end="2026-04-01").totals
    assert later["received"] == 0 and later["resolved"] == 1 and later["funds_raised"] == 0


def test_time_in_each_state(reported: Engine) -> None:
    tis = reported.report("petition").time_in_state
    day = 86_400
    # accepted: p1, p2, p4 each stayed one day (accept d1 -> assign d2).
    assert tis["accepted"][0] == 3
    assert tis["accepted"][1] == pytest.approx(day)
    # registered: p1, p2, p4 one day each; p3 two days (not accepted on d2): mean 1.25 days,
    # 90th percentile 2 days.
    assert tis["registered"][0] == 4
    assert tis["registered"][1] == pytest.approx(1.25 * day)
    assert tis["registered"][2] == pytest.approx(2 * day)
    # replied: p4 two days (d7 -> d9), p1 eight days (d11 -> d19).
    assert tis["replied"][1] == pytest.approx(5 * day)
    assert tis["replied"][2] == pytest.approx(8 * day)


def test_report_formats(reported: Engine) -> None:
    rep = reported.report("petition", by="unit")
    assert "closure rate" in report_table(rep)
    assert rep.to_csv().splitlines()[0] == "figure,label,total,A,B,C"
    assert '"received"' in rep.to_json()


def test_an_unknown_breakdown_field_or_filter_is_refused(reported: Engine) -> None:
    from casework import CaseworkError

    with pytest.raises(CaseworkError, match="no field 'colour'"):
        reported.report("petition", by="colour")
    with pytest.raises(CaseworkError, match="no field 'colour'"):
        reported.report("petition", where={"colour": "red"})


def test_a_workflow_that_declares_no_figures_says_so(engine: Engine) -> None:
    from casework import CaseworkError

    with pytest.raises(CaseworkError, match="declares no report figures"):
        engine.report("complaint")


@pytest.mark.parametrize("kw", [
    {}, {"by": "unit"}, {"by": "source"}, {"by": "leader"}, {"by": "concerns"},
    {"start": "2026-01-05", "end": "2026-01-12"}, {"start": "2026-01-12", "end": "2026-04-01"},
    {"start": "2026-01-06", "by": "unit"}, {"end": "2026-01-25", "by": "source"},
    {"start": "2026-02-01", "end": "2026-02-01"},
], ids=repr)
def test_the_maintained_figures_give_the_report_the_events_give(reported: Engine,
                                                                 kw: dict[str, str]) -> None:
    assert_reports_agree(reported, "petition", **kw)
    assert reported.report("petition", **kw).source == "figures"  # what a report reads by default
    assert [c.differences for c in reported.rebuild_figures("petition", check=True)] == [[]]


def test_a_report_the_figures_cannot_give_is_counted_from_the_events_and_says_why(
        reported: Engine) -> None:
    from casework import CaseworkError

    filtered = reported.report("petition", where={"source": "handed_down"})
    assert filtered.source == "events" and "where" in filtered.note
    odd = reported.report("petition", start="2026-01-05T12:00:00+08:00")
    assert odd.source == "events" and "midnight" in odd.note
    assert odd.totals == reported.report("petition", start="2026-01-05T12:00:00+08:00",
                                         source="events").totals
    with pytest.raises(CaseworkError, match=r"cannot answer: .*where"):
        reported.report("petition", where={"source": "handed_down"}, source="figures")
    with pytest.raises(CaseworkError, match="source must be one of"):
        reported.report("petition", source="guess")
