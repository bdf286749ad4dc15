"""Every refusal rule raises its own error, names where it happened, and writes nothing.

Runs on SQLite and on PostgreSQL (``any_engine``). For each refusal the case
(state, row version, data) and its history are compared before and after.
"""

from __future__ import annotations

import re

import pytest
from casework import (
    CaseExists,
    CaseNotFound,
    CommandRefused,
    Engine,
    GuardRefused,
    InvalidInput,
    InvalidTrigger,
    MissingFields,
    RoleRefused,
    WrongState,
)

from tests.petition_steps import (
    ARCHIVIST,
    CLERK,
    HANDLER,
    LEADER,
    OPEN_DATA,
    TRIAGE,
    case_in,
    count_cases,
    open_petition,
    snapshot,
)


def _refused(engine: Engine, case_id: str, error: type[CommandRefused], trigger: str,
             actor: str, data: dict | None = None) -> CommandRefused:
    """Fire a command that must be refused with ``error``; check nothing was written."""
    before = snapshot(engine, case_id)
    with pytest.raises(error) as info:
        engine.fire(case_id, trigger, actor=actor, data=data or {})
    assert type(info.value) is error
    assert snapshot(engine, case_id) == before, "a refused command changed the case"
    assert engine.verify(case_id) == []
    return info.value


def _names_where(err: CommandRefused, case_id: str, state: str, trigger: str) -> None:
    message = str(err)
    assert message.startswith(f"[{err.rule}] ")
    assert f"case {case_id}" in message
    assert f"state {state!r}" in message
    assert f"trigger {trigger!r}" in message
    assert (err.case_id, err.state, err.trigger) == (case_id, state, trigger)


# -- WrongState ---------------------------------------------------------------------


def test_transition_from_the_wrong_state_is_refused_naming_the_allowed_state(
        any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, WrongState, "reply", HANDLER,
                   {"reply_summary": "too early"})
    _names_where(err, case.id, "registered", "reply")
    assert err.rule == "state"
    assert "handling.decided" in str(err)


def test_activity_in_a_state_it_is_not_allowed_in_is_refused(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, WrongState, "funds_raised", LEADER, {"amount": 100})
    _names_where(err, case.id, "registered", "funds_raised")
    assert "handling" in err.reason


def test_transition_out_of_a_final_state_is_refused(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    any_engine.fire(case.id, "not_accept", actor=TRIAGE, data={"triage_reason": "concluded"})
    err = _refused(any_engine, case.id, WrongState, "accept", TRIAGE)
    _names_where(err, case.id, "not_accepted", "accept")


# -- RoleRefused --------------------------------------------------------------------


def test_transition_by_an_actor_without_an_allowed_role_is_refused(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, RoleRefused, "accept", HANDLER)
    _names_where(err, case.id, "registered", "accept")
    assert err.rule == "role"
    assert "triage" in err.reason and "leader" in err.reason
    assert "wu" in err.reason  # who was refused


def test_activity_by_an_actor_without_an_allowed_role_is_refused(any_engine: Engine) -> None:
    case = case_in(any_engine, "accepted")
    err = _refused(any_engine, case.id, RoleRefused, "thought_work", ARCHIVIST, {"notes": "n"})
    _names_where(err, case.id, "accepted", "thought_work")


def test_actor_with_no_roles_is_refused(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, RoleRefused, "accept", ":nobody")
    assert "none" in err.reason


def test_opening_a_case_without_an_opening_role_is_refused_and_opens_nothing(
        any_engine: Engine) -> None:
    with pytest.raises(RoleRefused) as info:
        any_engine.open_case("petition", OPEN_DATA, actor=HANDLER)
    assert "trigger 'open'" in str(info.value)
    assert "clerk" in str(info.value)
    assert count_cases(any_engine) == 0


# -- MissingFields ------------------------------------------------------------------


def test_transition_without_its_required_input_is_refused_naming_the_fields(
        any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, MissingFields, "refer", TRIAGE, {"referred_to": "court"})
    _names_where(err, case.id, "registered", "refer")
    assert err.rule == "required fields"
    assert "triage_reason" in err.reason
    assert "referred_to" not in err.reason


def test_empty_required_input_counts_as_missing(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, MissingFields, "not_accept", TRIAGE,
                   {"triage_reason": ""})
    assert "triage_reason" in err.reason


def test_activity_without_its_required_input_is_refused(any_engine: Engine) -> None:
    case = case_in(any_engine, "handling.investigating")
    err = _refused(any_engine, case.id, MissingFields, "coordination_meeting", LEADER,
                   {"attendees": ["court", "police"]})
    _names_where(err, case.id, "handling.investigating", "coordination_meeting")
    assert "agreed" in err.reason


def test_opening_a_case_without_required_fields_is_refused_and_opens_nothing(
        any_engine: Engine) -> None:
    data = {k: v for k, v in OPEN_DATA.items() if k not in ("summary", "channel")}
    with pytest.raises(MissingFields) as info:
        any_engine.open_case("petition", data, actor=CLERK)
    assert "summary" in str(info.value) and "channel" in str(info.value)
    assert count_cases(any_engine) == 0


# -- GuardRefused -------------------------------------------------------------------


def test_transition_whose_guard_is_false_is_refused_quoting_the_guard(any_engine: Engine) -> None:
    case = case_in(any_engine, "follow_up.visited")
    err = _refused(any_engine, case.id, GuardRefused, "archive", ARCHIVIST)
    _names_where(err, case.id, "follow_up.visited", "archive")
    assert err.rule == "guard"
    assert 'satisfaction == "satisfied"' in err.reason


def test_activity_whose_guard_is_false_is_refused(any_engine: Engine) -> None:
    case = case_in(any_engine, "handling.investigating")
    err = _refused(any_engine, case.id, GuardRefused, "funds_raised", LEADER, {"amount": 0})
    _names_where(err, case.id, "handling.investigating", "funds_raised")
    assert "amount > 0" in err.reason


# -- InvalidInput -------------------------------------------------------------------


def test_unknown_input_field_is_refused_naming_the_field(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, InvalidInput, "accept", TRIAGE, {"colour": "red"})
    _names_where(err, case.id, "registered", "accept")
    assert err.rule == "input"
    assert "colour" in err.reason
    assert "not a field" in err.reason


def test_input_of_the_wrong_type_is_refused_naming_the_field(any_engine: Engine) -> None:
    case = case_in(any_engine, "handling.investigating")
    err = _refused(any_engine, case.id, InvalidInput, "extend", LEADER,
                   {"extension_days": "a few", "extension_reason": "complex"})
    _names_where(err, case.id, "handling.investigating", "extend")
    assert "extension_days" in err.reason


def test_value_outside_an_enum_is_refused(any_engine: Engine) -> None:
    case = case_in(any_engine, "handling.investigating")
    err = _refused(any_engine, case.id, InvalidInput, "decide", HANDLER,
                   {"outcome": "half_correction", "decision_summary": "s"})
    assert "outcome" in err.reason


def test_activity_input_of_the_wrong_type_or_unknown_is_refused(any_engine: Engine) -> None:
    case = case_in(any_engine, "handling.investigating")
    err = _refused(any_engine, case.id, InvalidInput, "funds_raised", LEADER, {"amount": "lots"})
    _names_where(err, case.id, "handling.investigating", "funds_raised")
    assert "amount" in err.reason
    err = _refused(any_engine, case.id, InvalidInput, "coordination_meeting", LEADER,
                   {"attendees": "court and police", "agreed": "x"})
    assert "attendees" in err.reason
    err = _refused(any_engine, case.id, InvalidInput, "thought_work", HANDLER,
                   {"notes": "n", "mood": "calm"})
    assert "mood" in err.reason


def test_opening_a_case_with_an_unknown_field_is_refused_and_opens_nothing(
        any_engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="shoe_size"):
        any_engine.open_case("petition", {**OPEN_DATA, "shoe_size": 42}, actor=CLERK)
    assert count_cases(any_engine) == 0


# -- InvalidTrigger -----------------------------------------------------------------


def test_unknown_trigger_is_refused_naming_it(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, InvalidTrigger, "approve", LEADER)
    _names_where(err, case.id, "registered", "approve")
    assert err.rule == "unknown trigger"
    assert "petition" in err.reason


def test_a_trigger_of_another_workflow_is_unknown_here(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, InvalidTrigger, "confirm", "desk:he")
    assert "'confirm'" in str(err)


# -- CaseNotFound -------------------------------------------------------------------


def test_command_on_a_missing_case_raises_case_not_found_and_creates_nothing(
        any_engine: Engine) -> None:
    existing = open_petition(any_engine)
    before = snapshot(any_engine, existing.id)
    with pytest.raises(CaseNotFound, match=re.escape("'no-such-case'")) as info:
        any_engine.fire("no-such-case", "accept", actor=TRIAGE)
    assert info.value.case_id == "no-such-case"
    assert count_cases(any_engine) == 1
    assert snapshot(any_engine, existing.id) == before


def test_queries_on_a_missing_case_raise_case_not_found(any_engine: Engine) -> None:
    with pytest.raises(CaseNotFound, match="ghost"):
        any_engine.get_case("ghost")
    with pytest.raises(CaseNotFound, match="ghost"):
        any_engine.history("ghost")
    with pytest.raises(CaseNotFound, match="ghost"):
        any_engine.available_triggers("ghost", CLERK)


# -- the tree ---------------------------------------------------------------------


@pytest.mark.parametrize("error", [InvalidTrigger, WrongState, RoleRefused, MissingFields,
                                   InvalidInput, GuardRefused])
def test_every_refusal_is_a_command_refused(error: type[CommandRefused]) -> None:
    assert issubclass(error, CommandRefused)
    assert not issubclass(CaseNotFound, CommandRefused)


def test_refusals_leave_the_case_usable(any_engine: Engine) -> None:
    case = open_petition(any_engine)
    for trigger, actor, data in [("reply", HANDLER, {"reply_summary": "x"}),
                                 ("accept", HANDLER, {}),
                                 ("accept", TRIAGE, {"colour": "red"}),
                                 ("approve", TRIAGE, {})]:
        with pytest.raises(CommandRefused):
            any_engine.fire(case.id, trigger, actor=actor, data=data)
    after = any_engine.fire(case.id, "accept", actor=TRIAGE)
    assert (after.state, after.row_version) == ("accepted", 2)
    assert [e.seq for e in any_engine.history(case.id)] == [1, 2]
    assert any_engine.verify(case.id) == []


def test_unknown_trigger_sent_with_input_is_refused_as_unknown_trigger(any_engine: Engine) -> None:
    """The trigger not existing is the problem to report, not the input it carries."""
    case = open_petition(any_engine)
    err = _refused(any_engine, case.id, InvalidTrigger, "approve", LEADER, {"approved": True})
    _names_where(err, case.id, "registered", "approve")


def test_opening_a_case_under_an_existing_id_is_refused_and_changes_nothing(
        any_engine: Engine) -> None:
    case = any_engine.open_case("petition", OPEN_DATA, actor=CLERK, case_id="case-0001")
    before = snapshot(any_engine, case.id)
    with pytest.raises(CaseExists, match="case-0001"):
        any_engine.open_case("petition", {**OPEN_DATA, "summary": "another"}, actor=CLERK,
                             case_id="case-0001")
    assert snapshot(any_engine, case.id) == before
    assert count_cases(any_engine) == 1
