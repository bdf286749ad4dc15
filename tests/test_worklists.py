"""What is on whose desk: authority scoped to the case, assignment and stand-ins, search,
worklists and their pages, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from casework import (
    Assigned,
    Engine,
    FrozenClock,
    InvalidQuery,
    MissingFields,
    RoleRefused,
    ScopeRefused,
)

from tests.petition_steps import (
    CLERK,
    FOUR_FIXES,
    LEADER,
    OPEN_DATA,
    PATHS,
    STANDARD,
    case_in,
    drive,
    open_petition,
    snapshot,
)

OTHER_HANDLER = "handler:li@police"        # a handler, not this case's
ASSISTING = "handler:zhao@justice_bureau"  # an officer of an assisting unit
OTHER_LEADER = "leader:ma@police"

# Every step of the petition the seed assigns to someone, from the state it is taken in, and
# whether an assisting unit may take it (五個一: assisting units record work, nothing more).
SCOPED: list[tuple[str, str, bool]] = [
    ("handling.investigating", "extend", False),
    ("handling.investigating", "suspend", False),
    ("handling.suspended", "resume", False),
    ("handling.investigating", "decide", False),
    ("handling.decided", "reply", False),
    ("replied", "visit_unsatisfied", False),
    ("follow_up.visited", "continue_work", False),
    ("handling.investigating", "thought_work", True),
    ("handling.investigating", "home_visit", True),
    ("handling.investigating", "coordination_meeting", True),
    ("handling.investigating", "funds_raised", False),
]

ACTIVITY_INPUT: dict[str, dict[str, Any]] = {
    "thought_work": {"notes": "explained the ruling"},
    "home_visit": {"visitor": "zhao"},
    "coordination_meeting": {"attendees": ["court", "justice_bureau"], "agreed": "meet again"},
    "funds_raised": {"amount": 1000.0},
}


def _assisted(engine: Engine, state: str) -> str:
    case = open_petition(engine)
    engine.fire(case.id, "accept", actor="triage:zhao")
    engine.fire(case.id, "assign", actor=LEADER,
                data={**FOUR_FIXES, "assisting_units": ["justice_bureau"]})
    steps = [s for s in PATHS[state] if s not in ("accept", "assign")]
    drive(engine, case.id, *steps)
    assert engine.get_case(case.id).state == state
    return case.id


def _send(engine: Engine, case_id: str, step: str, actor: str) -> Any:
    if step in ACTIVITY_INPUT:
        return engine.fire(case_id, step, actor=actor, data=ACTIVITY_INPUT[step])
    cmd = STANDARD[step]
    return engine.fire(case_id, cmd.trigger, actor=actor, data=cmd.data)


@pytest.mark.parametrize(("state", "step", "assisting_may"), SCOPED,
                         ids=[s for _, s, _ in SCOPED])
def test_each_scoped_step_is_refused_to_a_handler_of_another_unit_naming_the_scope(
        any_engine: Engine, state: str, step: str, assisting_may: bool) -> None:
    cid = _assisted(any_engine, state)
    before = snapshot(any_engine, cid)
    outsider = OTHER_LEADER if step in ("extend", "funds_raised", "coordination_meeting") else (
        OTHER_HANDLER)
    with pytest.raises(ScopeRefused) as err:
        _send(any_engine, cid, step, outsider)
    assert "[scope]" in str(err.value) and "may do this" in str(err.value)
    assert snapshot(any_engine, cid) == before
    options = {o.name: o for o in any_engine.available_triggers(cid, outsider)}
    trigger = STANDARD[step].trigger if step in STANDARD else step
    assert not options[trigger].allowed and "[scope]" in (options[trigger].reason or "")


@pytest.mark.parametrize(("state", "step", "assisting_may"), SCOPED,
                         ids=[s for _, s, _ in SCOPED])
def test_an_assisting_unit_records_work_but_does_not_decide_reply_or_close(
        any_engine: Engine, state: str, step: str, assisting_may: bool) -> None:
    cid = _assisted(any_engine, state)
    actor = "leader:zhou@justice_bureau" if step in ("extend", "funds_raised",
                                                     "coordination_meeting") else ASSISTING
    if assisting_may:
        _send(any_engine, cid, step, actor)
        assert any_engine.history(cid)[-1].name == step
    else:
        before = snapshot(any_engine, cid)
        with pytest.raises((ScopeRefused, RoleRefused)):
            _send(any_engine, cid, step, actor)
        assert snapshot(any_engine, cid) == before


def test_reassigning_moves_a_case_from_one_worklist_to_the_other(any_engine: Engine) -> None:
    case = case_in(any_engine, "handling.investigating")
    heard: list[Any] = []
    any_engine.on("assigned", heard.append)
    assert case.id in {c.id for c in any_engine.worklist("handler:wu").items}
    assert case.id not in {c.id for c in any_engine.worklist("handler:qin").items}
    with pytest.raises(MissingFields, match="reason"):
        any_engine.assign(case.id, "handler", "qin", actor=LEADER)
    any_engine.assign(case.id, "handler", "qin", actor=LEADER, reason="wu moved to appeals")
    assert case.id not in {c.id for c in any_engine.worklist("handler:wu").items}
    assert case.id in {c.id for c in any_engine.worklist("handler:qin").items}
    last = any_engine.history(case.id)[-1]
    assert (last.kind, last.name) == ("assignment", "reassign:handler")
    assert last.details == {"slot": "handler", "from": "wu", "to": "qin",
                            "reason": "wu moved to appeals"}
    assert [type(n) for n in heard] == [Assigned]
    with pytest.raises(ScopeRefused):
        any_engine.fire(case.id, "decide", actor="handler:wu",
                        data=STANDARD["decide"].data)
    any_engine.fire(case.id, "decide", actor="handler:qin", data=STANDARD["decide"].data)
    with pytest.raises(RoleRefused):
        any_engine.assign(case.id, "handler", "wu", actor=CLERK, reason="back")


def test_a_stand_in_acts_for_the_handler_until_the_period_ends_by_itself(
        any_engine: Engine, clock: FrozenClock) -> None:
    case = case_in(any_engine, "handling.investigating")
    any_engine.delegate(case.id, "handler", "zhang", actor="handler:wu",
                        until=clock.now() + timedelta(days=3), reason="wu on leave")
    assert case.id in {c.id for c in any_engine.worklist("handler:zhang").items}
    any_engine.fire(case.id, "thought_work", actor="handler:zhang", data={"notes": "called"})
    clock.advance(days=3, seconds=1)
    any_engine.run_due()
    ended = any_engine.history(case.id)[-1]
    assert (ended.kind, ended.name, ended.details["stand_in"]) == (
        "delegation", "delegation_ended", "zhang")
    assert case.id not in {c.id for c in any_engine.worklist("handler:zhang").items}
    with pytest.raises(ScopeRefused):
        any_engine.fire(case.id, "decide", actor="handler:zhang", data=STANDARD["decide"].data)
    any_engine.fire(case.id, "decide", actor="handler:wu", data=STANDARD["decide"].data)
    assert any_engine.verify() == []


def test_worklist_and_available_triggers_agree_on_every_case(any_engine: Engine) -> None:
    for state in ("registered", "accepted", "handling.investigating", "handling.decided",
                  "replied", "follow_up.visited"):
        case_in(any_engine, state)
    actors = ["handler:wu", LEADER, "triage:zhao", CLERK, "archivist:zhou", OTHER_HANDLER,
              "supervisor:sun"]
    everything = any_engine.cases(limit=500).items
    for actor in actors:
        listed = {c.id: c for c in any_engine.worklist(actor, limit=500).items}
        for c in everything:
            options = any_engine.available_triggers(c.id, actor)
            can = {o.name for o in options if o.allowed}
            if can:
                assert c.id in listed, (actor, c.state, can)
                assert {o.name for o in listed[c.id].options if o.allowed} == can
            else:
                assert c.id not in listed, (actor, c.state)


def test_search_filters_by_state_unit_assignee_source_and_due(any_engine: Engine,
                                                              clock: FrozenClock) -> None:
    a = case_in(any_engine, "handling.investigating")
    b = case_in(any_engine, "registered")
    c = open_petition(any_engine, source="city")
    assert {x.id for x in any_engine.cases(state="handling").items} == {a.id}
    assert {x.id for x in any_engine.cases(unit=FOUR_FIXES["unit"]).items} == {a.id}
    assert {x.id for x in any_engine.cases(assignee="wu").items} == {a.id}
    assert {x.id for x in any_engine.cases(source="city").items} == {c.id}
    soon = any_engine.cases(due_before=clock.now() + timedelta(days=20), count=True)
    assert {x.id for x in soon.items} == {b.id, c.id} and soon.total == 2
    first = any_engine.cases(limit=1).items[0]
    assert first.next_deadline == "triage" and first.summary["source"] in ("direct", "city")
    with pytest.raises(InvalidQuery, match="personal data"):
        any_engine.cases(fields={"petitioner_name": OPEN_DATA["petitioner_name"]})
    with pytest.raises(InvalidQuery, match="cursor"):
        any_engine.cases(cursor="not-a-cursor")


def test_a_petitioners_other_cases_are_found_through_the_keyed_identity(
        any_engine: Engine) -> None:
    a = open_petition(any_engine, petitioner_id_number="110101198001010011")
    b = open_petition(any_engine, petitioner_id_number="110101198001010011")
    open_petition(any_engine, petitioner_id_number="110101199002020022")
    found = any_engine.cases(same_petitioner_as=a.id).items
    assert {c.id for c in found} == {a.id, b.id}


def test_pages_neither_repeat_nor_skip_a_case_while_others_are_opened_and_moved(
        any_engine: Engine) -> None:
    stable = {open_petition(any_engine).id for _ in range(25)}
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                c = open_petition(any_engine)
                any_engine.fire(c.id, "accept", actor="triage:zhao")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=churn)
    t.start()
    try:
        seen: list[str] = []
        cursor = None
        for _ in range(200):
            page = any_engine.cases(state="registered", limit=4, cursor=cursor)
            seen.extend(c.id for c in page.items)
            cursor = page.cursor
            if cursor is None:
                break
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors
    listed = [i for i in seen if i in stable]
    assert sorted(listed) == sorted(stable)  # each stable case exactly once
    assert len(seen) == len(set(seen))


def test_a_reassigned_and_delegated_case_moves_through_a_ledger(
        any_engine: Engine, clock: FrozenClock, tmp_path: Any) -> None:
    import io

    case = case_in(any_engine, "handling.investigating")
    any_engine.assign(case.id, "handler", "qin", actor=LEADER, reason="wu moved")
    any_engine.assign(case.id, "assisting_units", ["police"], actor=LEADER)
    any_engine.delegate(case.id, "leader", "deng", actor=LEADER,
                        until=clock.now() + timedelta(days=5))
    buf = io.StringIO()
    any_engine.export_cases(buf, case_ids=[case.id])
    key = tmp_path / "same-office.key"
    key.write_bytes(Path(any_engine.database_url.removeprefix("sqlite:///") + ".key").read_bytes()
                    if any_engine.backend == "sqlite" else Path("casework.key").read_bytes())
    with Engine(f"sqlite:///{tmp_path / 'other.db'}", ["petition"], clock=clock,
                key_file=key) as other:
        other.import_cases(io.StringIO(buf.getvalue()))
        assert other.verify() == []
        assert case.id in {c.id for c in other.worklist("handler:qin").items}
        assert case.id in {c.id for c in other.worklist("leader:deng").items}
        assert case.id in {c.id for c in other.worklist("handler:x@police", of="unit").items}


def test_the_command_line_lists_cases_and_worklists(tmp_path: Any) -> None:
    from tests.helpers import run_cli

    db = f"sqlite:///{tmp_path / 'c.db'}"
    opened = run_cli("--db", db, "open", "petition", "--actor", CLERK, "-d", "petitioner_name=A",
                     "-d", "channel=visit", "-d", "source=city", "-d", "summary=s")
    cid = opened.out.strip().splitlines()[-1]
    run_cli("--db", db, "fire", cid, "accept", "--actor", "triage:zhao")
    listed = run_cli("--db", db, "worklist", "--actor", "leader:chen", "--format", "json")
    assert listed.code == 0 and cid in listed.out and "\"assign\"" in listed.out
    found = run_cli("--db", db, "cases", "--state", "accepted", "--format", "csv")
    assert found.code == 0 and cid in found.out
    bad = run_cli("--db", db, "cases", "--where", "petitioner_name=A")
    assert bad.code == 1 and "personal data" in bad.err


def test_reports_count_reassignments_per_unit(any_engine: Engine) -> None:
    a = case_in(any_engine, "handling.investigating")
    b = case_in(any_engine, "handling.investigating")
    any_engine.assign(a.id, "handler", "qin", actor=LEADER, reason="moved")
    any_engine.assign(a.id, "handler", "wu", actor=LEADER, reason="back")
    any_engine.assign(b.id, "lead_unit", "police", actor=LEADER, reason="jurisdiction")
    counts = any_engine.report("petition").reassignments
    assert counts == {FOUR_FIXES["unit"]: 2, "police": 1}
