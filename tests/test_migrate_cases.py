"""Moving running cases to a new version of their workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from casework import Engine, FrozenClock

from tests.helpers import run_cli, sql

START = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
FIXES = {"leader": "chen", "handler": "wu", "unit": "court", "due_date": "2026-03-01",
         "target": "resolve"}


def _v2(tmp_path: Path, v1: Path) -> Path:
    """Version 2: `handling.investigating` renamed `handling.working`; 45 days to handle."""
    text_ = v1.read_text(encoding="utf-8")
    text_ = text_.replace("investigating", "working").replace("within: 60d", "within: 45d")
    out = tmp_path / "petition.yaml"
    out.write_text(text_, encoding="utf-8")
    return out


@pytest.fixture
def setup(db_url: str, tmp_path: Path,
          exact_petition: Path) -> tuple[str, dict[str, str], Path, FrozenClock]:
    """Cases of version 1 (the petition workflow, its periods counted exactly so that the
    due instants below are whole days from the start) in three states."""
    clock = FrozenClock(START)
    ids: dict[str, str] = {}
    with Engine(db_url, [exact_petition], clock=clock) as e:
        for name in ("new", "working", "visiting"):
            ids[name] = e.open_case("petition", {"petitioner_name": name, "channel": "visit",
                                                 "source": "city", "summary": "s"},
                                    actor="clerk:li").id
        for name in ("working", "visiting"):
            e.fire(ids[name], "accept", actor="triage:z")
            e.fire(ids[name], "assign", actor="leader:chen", data=FIXES)
        e.fire(ids["visiting"], "decide", actor="leader:chen",
               data={"outcome": "explanation", "decision_summary": "x"})
        e.fire(ids["visiting"], "reply", actor="handler:wu", data={"reply_summary": "x"})
        e.fire(ids["visiting"], "return_visit", actor="handler:wu", data={"satisfaction": "unsatisfied"})
        e.fire(ids["visiting"], "continue_work", actor="handler:wu")
    clock.set(START + timedelta(days=10))
    return db_url, ids, _v2(tmp_path, exact_petition), clock


def _snapshot(e: Engine) -> list[tuple[object, ...]]:
    """What the database holds of the cases, their events and timers."""
    return [tuple(r) for q in ("SELECT id, version, state, row_version FROM cases ORDER BY id",
                               "SELECT case_id, seq, hash FROM events ORDER BY case_id, seq",
                               "SELECT id, status, due_at FROM timers ORDER BY id")
            for r in sql(e, q)]


def test_cases_stay_on_their_version_until_migrated(setup: tuple) -> None:  # type: ignore[type-arg]
    db_url, ids, v2, clock = setup
    with Engine(db_url, [v2], clock=clock) as e:
        new_version = e.workflow("petition").version
        assert all(e.get_case(i).version != new_version for i in ids.values())
        assert len(e.workflow_versions("petition")) == 2


def test_a_dry_run_lists_what_would_move_and_changes_nothing(setup: tuple) -> None:  # type: ignore[type-arg]
    db_url, ids, v2, clock = setup
    with Engine(db_url, [v2], clock=clock) as e:
        before = _snapshot(e)
        res = e.migrate("petition", "latest", {"handling.investigating": "handling.working"})
        assert res.dry_run
        assert {i.case_id: i.to_state for i in res.moved} == {
            ids["new"]: "registered", ids["working"]: "handling.working",
            ids["visiting"]: "follow_up.continued_work"}
        assert _snapshot(e) == before


def test_a_case_in_an_unmapped_state_is_refused_and_left_alone(setup: tuple) -> None:  # type: ignore[type-arg]
    db_url, ids, v2, clock = setup
    with Engine(db_url, [v2], clock=clock) as e:
        old_version = e.get_case(ids["working"]).version
        res = e.migrate("petition", "latest", {}, dry_run=False)
        assert [i.case_id for i in res.refused] == [ids["working"]]
        assert "handling.investigating" in (res.refused[0].refused or "")
        assert e.get_case(ids["working"]).version == old_version
        assert e.get_case(ids["new"]).version == e.workflow("petition").version


def test_migrated_cases_follow_the_new_definition_and_its_timers(setup: tuple) -> None:  # type: ignore[type-arg]
    db_url, ids, v2, clock = setup
    with Engine(db_url, [v2], clock=clock) as e:
        res = e.migrate("petition", "latest", {"handling.investigating": "handling.working"},
                        dry_run=False)
        assert not res.refused and len(res.moved) == 3
        case = e.get_case(ids["working"])
        assert case.state == "handling.working" and case.version == e.workflow("petition").version
        last = e.history(ids["working"])[-1]
        assert (last.kind, last.from_state, last.to_state) == (
            "migration", "handling.investigating", "handling.working")
        # The handling clock kept its start (accepted on day 0) and takes the new 45 days.
        breach = [t for t in e.pending_timers(ids["working"]) if t.kind == "breach"]
        assert [t.due_at for t in breach] == [START + timedelta(days=45)]
        # The return-visit cycle of the unsatisfied case was rescheduled from now.
        cycles = [t for t in e.pending_timers(ids["visiting"]) if t.kind == "cycle"]
        assert [t.due_at for t in cycles] == [START + timedelta(days=40)]
        # The new rules apply: the migrated case moves on from its new state.
        e.fire(ids["working"], "decide", actor="leader:chen",
               data={"outcome": "maintained", "decision_summary": "x"})
        assert e.get_case(ids["working"]).state == "handling.decided"
        assert e.verify() == []


def test_migrate_command_dry_run_then_apply(setup: tuple) -> None:  # type: ignore[type-arg]
    db_url, _ids, v2, _clock = setup
    cfg = v2.parent / "casework.toml"
    cfg.write_text(f'[workflows]\npaths = ["{v2}"]\n', encoding="utf-8")
    args = ["--config", str(cfg), "--db", db_url, "migrate", "petition", "--to", "latest"]
    dry = run_cli(*args)
    assert dry.code == 1 and "refused" in dry.output and "dry run" in dry.output
    done = run_cli(*args, "--map", "handling.investigating=handling.working", "--apply")
    assert done.code == 0, done.output
    assert "3 case(s) moved, 0 refused" in done.output
