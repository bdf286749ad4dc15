"""The maintained report figures: kept by every way a case changes (commands, timers,
migration, ledger import), equal to the figures counted from the events, rebuilt and
checked on demand, and never trusted when they do not follow the report's definition."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from casework import Engine, FrozenClock

from tests.conftest import PETITION, assert_figures_intact, assert_reports_agree
from tests.helpers import run_cli, sql
from tests.petition_steps import CLERK, FOUR_FIXES, HANDLER, LEADER, OPEN_DATA, TRIAGE

START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # Monday 2 March 2026, 09:00 in Beijing
PERIODS = [{}, {"by": "unit"}, {"by": "source"}, {"start": "2026-03-01", "end": "2026-04-01"},
           {"start": "2026-03-03", "by": "unit"}]


def _year(e: Engine, clock: FrozenClock, n: int = 6) -> list[str]:
    """``n`` petitions through their stages over a few weeks: some archived, some
    reassigned to another unit, some overdue and escalated by the scheduler."""
    ids = []
    for i in range(n):
        cid = e.open_case("petition", {**OPEN_DATA, "source": ["city", "direct", "province"][i % 3]},
                          actor=CLERK).id
        ids.append(cid)
    for i, cid in enumerate(ids):
        clock.advance(timedelta(hours=7))
        e.fire(cid, "accept", actor=TRIAGE)
        if i % 3 == 2:
            continue  # left to go overdue
        e.fire(cid, "assign", actor=LEADER, data={**FOUR_FIXES, "unit": f"u{i % 2}"})
        if i % 2 == 0:
            e.fire(cid, "funds_raised", actor=LEADER, data={"amount": 100 * (i + 1)})
    clock.advance(timedelta(days=3))
    for cid in ids[:2]:
        e.fire(cid, "decide", actor=LEADER, data={"outcome": "explanation",
                                                         "decision_summary": "x"})
        e.fire(cid, "reply", actor=HANDLER, data={"reply_summary": "x"})
    clock.advance(timedelta(days=80))
    e.run_due()  # deadlines broken: escalations, overdue cases
    return ids


def test_every_way_a_case_changes_keeps_the_figures_the_events_give(db_url: str) -> None:
    clock = FrozenClock(START)
    with Engine(db_url, [PETITION], clock=clock) as e:
        _year(e, clock)
        rep = e.report("petition")
        assert rep.source == "figures" and rep.escalations and rep.totals["funds_raised"] > 0
        for kw in PERIODS:
            assert_reports_agree(e, "petition", **kw)
        assert_figures_intact(e)


def test_a_reassignment_to_another_unit_moves_the_cases_figures_with_it(db_url: str) -> None:
    clock = FrozenClock(START)
    with Engine(db_url, [PETITION], clock=clock) as e:
        cid = e.open_case("petition", OPEN_DATA, actor=CLERK).id
        e.fire(cid, "accept", actor=TRIAGE)
        e.fire(cid, "assign", actor=LEADER, data={**FOUR_FIXES, "unit": "police"})
        e.fire(cid, "funds_raised", actor=LEADER, data={"amount": 700})
        assert e.report("petition", by="unit").rows["police"]["funds_raised"] == 700
        e.assign(cid, "lead_unit", "court", actor=LEADER, reason="wrong unit")
        rows = e.report("petition", by="unit").rows
        assert set(rows) == {"court"} and rows["court"]["funds_raised"] == 700
        assert e.report("petition").reassignments == {"court": 1}
        assert_reports_agree(e, "petition", by="unit")
        assert_figures_intact(e)


def test_migrated_and_imported_cases_are_counted_as_the_events_count_them(
        db_url: str, tmp_path: Path) -> None:
    clock = FrozenClock(START)
    v2 = tmp_path / "petition.yaml"
    v2.write_text(PETITION.read_text(encoding="utf-8").replace("investigating", "working"),
                  encoding="utf-8")
    ledger = io.StringIO()
    key = tmp_path / "office.key"
    with Engine(db_url, [PETITION], clock=clock, key_file=key) as e:
        _year(e, clock, 4)
        e.export_cases(ledger, workflow="petition")
    with Engine(db_url, [v2], clock=clock, key_file=key) as e:
        res = e.migrate("petition", "latest", {"handling.investigating": "handling.working"},
                        dry_run=False)
        assert res.moved and not res.refused
        for kw in PERIODS:
            assert_reports_agree(e, "petition", **kw)
        assert_figures_intact(e)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with Engine(target, [PETITION], clock=clock, key_file=key) as t:
        t.import_cases(io.StringIO(ledger.getvalue()))
        assert t.report("petition").source == "figures"
        for kw in PERIODS:
            assert_reports_agree(t, "petition", **kw)
        assert_figures_intact(t)


def test_a_check_names_figures_edited_behind_the_engines_back_and_a_rebuild_repairs_them(
        db_url: str) -> None:
    clock = FrozenClock(START)
    with Engine(db_url, [PETITION], clock=clock) as e:
        _year(e, clock, 3)
        received = e.report("petition").totals["received"]
        one = ("SELECT min(value || '/' || shard) FROM report_figures "
               "WHERE figure = 'received' AND dim = 'unit'")  # the total is the sum over units
        sql(e, "UPDATE report_figures SET n = n + 40 WHERE figure = 'received' AND dim = 'unit' "
               f"AND value || '/' || shard = ({one})")
        sql(e, "DELETE FROM report_stays WHERE seq = 2")
        assert e.report("petition").totals["received"] == received + 40  # what is stored is read
        [check] = e.rebuild_figures("petition", check=True)
        assert not check.ok
        assert any(d.startswith("received on 2026-03-02 (unit=") and "stored 4" in d
                   for d in check.differences), check.differences
        assert any(d.startswith("stay ended by event 2") for d in check.differences)
        [rebuilt] = e.rebuild_figures("petition")
        assert rebuilt.ok and rebuilt.cases == 3 and rebuilt.stays > 0
        assert e.report("petition").totals["received"] == received
        assert_figures_intact(e)


def test_figures_that_do_not_follow_the_report_definition_are_not_read_until_rebuilt(
        db_url: str, tmp_path: Path) -> None:
    clock = FrozenClock(START)
    with Engine(db_url, [PETITION], clock=clock) as e:
        _year(e, clock, 3)
    changed = tmp_path / "petition.yaml"
    text = PETITION.read_text(encoding="utf-8")
    marker = "  figures:\n"
    assert marker in text
    changed.write_text(text.replace(marker, marker + "    assigned: {count: events, name: assign}\n"),
                       encoding="utf-8")
    with Engine(db_url, [changed], clock=clock) as e:
        rep = e.report("petition")
        assert rep.source == "events" and "another report definition" in rep.note
        assert rep.totals["assigned"] == 2
        cid = e.open_case("petition", OPEN_DATA, actor=CLERK).id  # not counted twice
        e.fire(cid, "accept", actor=TRIAGE)
        [check] = e.rebuild_figures(check=True)  # it wrote cases beside the old figures
        assert not check.ok and "written under two report definitions" in check.differences[0]
        e.rebuild_figures()
        rep = e.report("petition")
        assert rep.source == "figures" and rep.totals["assigned"] == 2
        assert rep.totals["received"] == 4
        assert_reports_agree(e, "petition")


def test_a_database_whose_cases_came_before_the_figures_counts_from_the_events_until_rebuilt(
        sqlite_url: str) -> None:
    clock = FrozenClock(START)
    with Engine(sqlite_url, [PETITION], clock=clock) as e:
        _year(e, clock, 3)
        sql(e, "DELETE FROM report_figures")  # as a database upgraded from before them
        sql(e, "DELETE FROM report_stays")
        sql(e, "DELETE FROM report_plans")
    with Engine(sqlite_url, [PETITION], clock=clock) as e:
        cid = e.open_case("petition", OPEN_DATA, actor=CLERK).id
        rep = e.report("petition")
        assert rep.source == "events" and "not built" in rep.note and rep.totals["received"] == 4
        e.fire(cid, "accept", actor=TRIAGE)
        e.rebuild_figures()
        assert e.report("petition").source == "figures"
        assert_reports_agree(e, "petition", by="unit")


def test_the_rebuild_command_checks_and_rebuilds(sqlite_url: str, tmp_path: Path) -> None:
    clock = FrozenClock(START)
    with Engine(sqlite_url, [PETITION], clock=clock) as e:
        _year(e, clock, 2)
        sql(e, "UPDATE report_figures SET n = 9 WHERE figure = 'accepted' AND dim = 'source'")
    db = ("--db", sqlite_url)
    bad = run_cli(*db, "rebuild-figures", "--check")
    assert bad.code == 1 and "differs: accepted on 2026-03-02 (source=" in bad.output
    good = run_cli(*db, "rebuild-figures")
    assert good.code == 0 and "petition: rebuilt" in good.output and "from 2 case(s)" in good.output
    again = run_cli(*db, "rebuild-figures", "--check")
    assert again.code == 0 and "differs" not in again.output
    shown = run_cli(*db, "report", "--source", "figures")
    assert shown.code == 0 and "read from the maintained figures" in shown.output
