"""The petition workflow (workflows/petition.yaml), transition by transition.

Every (trigger, source) pair of the definition and every activity is exercised
here; ``test_every_transition_and_activity_of_the_definition_has_a_test`` fails
when the definition gains one that is not listed in ``EXERCISED_*``.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

import pytest
from casework import (
    Case,
    Engine,
    FrozenClock,
    GuardRefused,
    InvalidInput,
    MissingFields,
    RoleRefused,
    ScopeRefused,
    WindowClosed,
    WrongState,
)

from tests.petition_steps import (
    ARCHIVIST,
    CLERK,
    FOUR_FIXES,
    HANDLER,
    LEADER,
    LEADER_ID,
    OTHER_LEADER,
    PATHS,
    SUPERVISOR,
    TRIAGE,
    case_in,
    drive,
    open_petition,
    run,
    snapshot,
)

# Every (trigger, source) pair the tests below fire successfully.
EXERCISED_TRANSITIONS: set[tuple[str, str]] = {
    ("accept", "registered"),
    ("refer", "registered"),
    ("not_accept", "registered"),
    ("divert", "registered"),
    ("assign", "accepted"),
    ("extend", "handling.investigating"),
    ("suspend", "handling.investigating"),
    ("resume", "handling.suspended"),
    ("decide", "handling.investigating"),
    ("reply", "handling.decided"),
    ("return_visit", "replied"),
    ("return_visit", "follow_up.continued_work"),
    ("return_visit", "review.answered"),
    ("return_visit", "review.rereviewed"),
    ("continue_work", "follow_up.visited"),
    ("archive", "follow_up.visited"),
    ("request_review", "replied"),
    ("request_review", "follow_up.visited"),
    ("request_review", "follow_up.continued_work"),
    ("answer_review", "review.requested"),
    ("request_rereview", "review.answered"),
    ("answer_rereview", "review.rereview_requested"),
    ("terminate", "review.rereviewed"),
    ("report_closure", "follow_up.continued_work"),
    ("report_closure", "review.rereviewed"),
}
EXERCISED_ACTIVITIES: set[str] = {
    "home_visit", "coordination_meeting", "funds_raised", "thought_work", "flag_persistent",
}


# A command may not overwrite the case fields a guard judges (leader, extended,
# satisfaction, replied_at, persistent_petitioning) to get past that guard: it is
# refused either by the guard or as input the transition does not take.
OVERRIDE_REFUSED = (GuardRefused, InvalidInput)


def _last_event(engine: Engine, case_id: str):
    return engine.history(case_id)[-1]


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- coverage of the definition ---------------------------------------------


def test_every_transition_and_activity_of_the_definition_has_a_test(engine: Engine) -> None:
    wf = engine.workflow("petition")
    defined = {(t.trigger, s) for t in wf.definition.transitions for s in t.source}
    untested = defined - EXERCISED_TRANSITIONS
    assert not untested, f"transitions without a test: {sorted(untested)}"
    stale = EXERCISED_TRANSITIONS - defined
    assert not stale, f"listed as exercised but not in the definition: {sorted(stale)}"
    assert set(wf.activities) == EXERCISED_ACTIVITIES


def test_standard_paths_reach_every_non_final_leaf(engine: Engine) -> None:
    wf = engine.workflow("petition")
    assert set(PATHS) == set(wf.states) - wf.final_states


# -- opening and triage -----------------------------------------------------


def test_open_registers_case_with_first_handler_and_petition_count(engine: Engine) -> None:
    case = open_petition(engine)
    assert case.state == "registered"
    assert case.row_version == 1
    assert case.final is False
    assert case.data["first_handler"] == "li"
    assert case.data["petition_count"] == 1
    [ev] = engine.history(case.id)
    assert (ev.seq, ev.kind, ev.name, ev.to_state, ev.actor, ev.role) == (
        1, "open", "open", "registered", "li", "clerk")


def test_accept_moves_case_to_accepted_and_stamps_accepted_at(
        engine: Engine, clock: FrozenClock) -> None:
    case = open_petition(engine)
    case = run(engine, case.id, "accept")
    assert case.state == "accepted"
    assert _iso(case.data["accepted_at"]) == clock.now()
    ev = _last_event(engine, case.id)
    assert (ev.kind, ev.name, ev.from_state, ev.to_state, ev.role) == (
        "transition", "accept", "registered", "accepted", "triage")


def test_refer_ends_case_as_referred_with_the_receiving_body(engine: Engine) -> None:
    case = run(engine, open_petition(engine).id, "refer")
    assert case.state == "referred"
    assert case.final is True
    assert case.data["referred_to"] == "city procuratorate"
    assert case.data["triage_reason"] == "the procuratorate has jurisdiction"


def test_refer_without_the_receiving_body_is_refused(engine: Engine) -> None:
    case = open_petition(engine)
    with pytest.raises(MissingFields, match="referred_to"):
        engine.fire(case.id, "refer", actor=TRIAGE, data={"triage_reason": "elsewhere"})
    assert engine.get_case(case.id).state == "registered"


def test_not_accept_ends_case_as_not_accepted(engine: Engine) -> None:
    case = run(engine, open_petition(engine).id, "not_accept")
    assert (case.state, case.final) == ("not_accepted", True)
    assert case.data["triage_reason"] == "already concluded"


def test_divert_ends_case_in_the_litigation_procedure(engine: Engine) -> None:
    case = run(engine, open_petition(engine).id, "divert")
    assert (case.state, case.final) == ("diverted", True)


def test_a_final_case_takes_no_further_transition_or_activity(engine: Engine) -> None:
    case = run(engine, open_petition(engine).id, "divert")
    with pytest.raises(WrongState):
        run(engine, case.id, "accept")
    with pytest.raises(WrongState):
        engine.fire(case.id, "thought_work", actor=HANDLER, data={"notes": "n"})


# -- assignment: the four fixes ----------------------------------------------


def test_assign_with_the_four_fixes_enters_handling_investigating(engine: Engine) -> None:
    case = case_in(engine, "accepted")
    case = run(engine, case.id, "assign")
    assert case.state == "handling.investigating"
    for field, value in FOUR_FIXES.items():
        assert case.data[field] == value


@pytest.mark.parametrize("missing", ["leader", "handler", "unit", "due_date", "target"])
def test_assign_is_refused_without_each_of_the_four_fixes(engine: Engine, missing: str) -> None:
    case = case_in(engine, "accepted")
    before = snapshot(engine, case.id)
    data = {k: v for k, v in FOUR_FIXES.items() if k != missing}
    with pytest.raises(MissingFields, match=missing):
        engine.fire(case.id, "assign", actor=LEADER, data=data)
    # An empty value is no fix either (a date field refuses "" as input already).
    with pytest.raises((MissingFields, InvalidInput), match=missing):
        engine.fire(case.id, "assign", actor=LEADER, data={**data, missing: ""})
    assert snapshot(engine, case.id) == before


def test_assign_is_refused_to_a_handler(engine: Engine) -> None:
    case = case_in(engine, "accepted")
    with pytest.raises(RoleRefused):
        run(engine, case.id, "assign", actor=HANDLER)


def test_assign_by_a_supervisor_is_allowed(engine: Engine) -> None:
    case = case_in(engine, "accepted")
    assert run(engine, case.id, "assign", actor=SUPERVISOR).state == "handling.investigating"


# -- the extension: once, by the case's own leader, at most 30 days, with a reason ---


def test_extend_by_the_cases_own_leader_records_the_extension(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    case = run(engine, case.id, "extend", extension_days=30)
    assert case.state == "handling.investigating"
    assert case.data["extended"] is True
    assert case.data["extension_days"] == 30
    assert case.data["extension_reason"] == "several bodies are involved"
    ev = _last_event(engine, case.id)
    assert (ev.name, ev.from_state, ev.to_state, ev.actor) == (
        "extend", "handling.investigating", "handling.investigating", LEADER_ID)


def test_extend_by_another_leader_is_refused(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    before = snapshot(engine, case.id)
    with pytest.raises(ScopeRefused, match=re.escape(f"only the case's leader ({LEADER_ID})")):
        run(engine, case.id, "extend", actor=OTHER_LEADER)
    assert snapshot(engine, case.id) == before


def test_extend_by_another_leader_naming_himself_leader_in_the_input_is_refused(
        engine: Engine) -> None:
    """The guard must judge the case's leader, not a leader the command sends along."""
    case = case_in(engine, "handling.investigating")
    before = snapshot(engine, case.id)
    with pytest.raises(OVERRIDE_REFUSED):
        run(engine, case.id, "extend", actor=OTHER_LEADER, leader="ma")
    after = snapshot(engine, case.id)
    assert after == before
    assert after.data["leader"] == LEADER_ID


def test_extend_by_a_handler_is_refused_by_role(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    with pytest.raises(RoleRefused):
        run(engine, case.id, "extend", actor=HANDLER)


def test_extend_is_allowed_only_once(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    run(engine, case.id, "extend", extension_days=10)
    before = snapshot(engine, case.id)
    with pytest.raises(GuardRefused, match="not extended"):
        run(engine, case.id, "extend", extension_days=5)
    assert snapshot(engine, case.id) == before


def test_a_second_extension_is_refused_even_if_the_input_claims_not_extended(
        engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    run(engine, case.id, "extend", extension_days=10)
    before = snapshot(engine, case.id)
    with pytest.raises(OVERRIDE_REFUSED):
        run(engine, case.id, "extend", extension_days=20, extended=False)
    assert snapshot(engine, case.id) == before
    assert [e.name for e in engine.history(case.id)].count("extend") == 1


@pytest.mark.parametrize("days", [31, 60, 0, -5])
def test_extend_outside_1_to_30_days_is_refused(engine: Engine, days: int) -> None:
    case = case_in(engine, "handling.investigating")
    before = snapshot(engine, case.id)
    with pytest.raises(GuardRefused, match="extension_days"):
        run(engine, case.id, "extend", extension_days=days)
    assert snapshot(engine, case.id) == before


def test_extend_without_a_reason_is_refused(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    with pytest.raises(MissingFields, match="extension_reason"):
        engine.fire(case.id, "extend", actor=LEADER, data={"extension_days": 10})
    with pytest.raises(MissingFields, match="extension_reason"):
        engine.fire(case.id, "extend", actor=LEADER,
                    data={"extension_days": 10, "extension_reason": ""})
    assert "extended" not in engine.get_case(case.id).data


def test_extend_after_the_decision_is_refused_by_state(engine: Engine) -> None:
    case = case_in(engine, "handling.decided")
    with pytest.raises(WrongState):
        run(engine, case.id, "extend")


# -- suspension: the petitioner cannot be reached --------------------------------


def test_suspend_with_a_reason_pauses_handling(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    case = run(engine, case.id, "suspend")
    assert case.state == "handling.suspended"
    assert case.data["suspension_reason"] == "the petitioner is abroad"


def test_suspend_without_a_reason_is_refused(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    with pytest.raises(MissingFields, match="suspension_reason"):
        engine.fire(case.id, "suspend", actor=HANDLER, data={})
    assert engine.get_case(case.id).state == "handling.investigating"


def test_a_suspended_case_is_not_decided_until_resumed(engine: Engine) -> None:
    case = case_in(engine, "handling.suspended")
    with pytest.raises(WrongState):
        run(engine, case.id, "decide")
    engine.fire(case.id, "thought_work", actor=HANDLER, data={"notes": "letter sent"})
    case = run(engine, case.id, "resume")
    assert case.state == "handling.investigating"
    assert run(engine, case.id, "decide").state == "handling.decided"


def test_resume_is_refused_to_a_clerk(engine: Engine) -> None:
    case = case_in(engine, "handling.suspended")
    with pytest.raises(RoleRefused):
        run(engine, case.id, "resume", actor=CLERK)


# -- decision and reply ----------------------------------------------------------


@pytest.mark.parametrize(
    "outcome", ["full_correction", "partial_correction", "explanation", "maintained"])
def test_decide_records_each_lawful_outcome(engine: Engine, outcome: str) -> None:
    case = case_in(engine, "handling.investigating")
    case = run(engine, case.id, "decide", outcome=outcome)
    assert case.state == "handling.decided"
    assert case.data["outcome"] == outcome
    assert case.data["decision_summary"] == "the fee is refunded"


def test_decide_is_refused_to_a_clerk(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    with pytest.raises(RoleRefused):
        run(engine, case.id, "decide", actor=CLERK)


def test_reply_stamps_replied_at_and_moves_to_replied(engine: Engine, clock: FrozenClock) -> None:
    case = case_in(engine, "handling.decided")
    clock.advance(days=3)
    case = run(engine, case.id, "reply")
    assert case.state == "replied"
    assert _iso(case.data["replied_at"]) == clock.now()
    assert case.data["reply_summary"] == "written reply delivered"


def test_reply_before_a_decision_is_refused_by_state(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    with pytest.raises(WrongState, match=re.escape("handling.decided")):
        run(engine, case.id, "reply")


# -- return visits and archiving --------------------------------------------------


@pytest.mark.parametrize(
    "source", ["replied", "follow_up.continued_work", "review.answered", "review.rereviewed"])
def test_return_visit_from_each_source_records_satisfaction_and_counts_visits(
        engine: Engine, clock: FrozenClock, source: str) -> None:
    case = case_in(engine, source)
    visits_before = case.data.get("visit_count") or 0
    clock.advance(days=1)
    case = run(engine, case.id, "visit_satisfied")
    assert case.state == "follow_up.visited"
    assert case.data["satisfaction"] == "satisfied"
    assert case.data["visit_count"] == visits_before + 1
    assert _iso(case.data["last_visit_at"]) == clock.now()
    assert _last_event(engine, case.id).from_state == source


def test_archive_is_refused_while_the_petitioner_is_unsatisfied(engine: Engine) -> None:
    case = case_in(engine, "follow_up.visited")
    assert case.data["satisfaction"] == "unsatisfied"
    before = snapshot(engine, case.id)
    with pytest.raises(GuardRefused, match='satisfaction == "satisfied"'):
        run(engine, case.id, "archive")
    assert snapshot(engine, case.id) == before


def test_archive_is_refused_when_the_archivist_claims_satisfaction_in_the_input(
        engine: Engine) -> None:
    """Only a return visit records satisfaction; the archive command cannot assert it."""
    case = case_in(engine, "follow_up.visited")
    before = snapshot(engine, case.id)
    with pytest.raises(OVERRIDE_REFUSED):
        run(engine, case.id, "archive", satisfaction="satisfied")
    assert snapshot(engine, case.id) == before


def test_archive_succeeds_after_a_satisfied_return_visit(engine: Engine, clock: FrozenClock) -> None:
    case = case_in(engine, "replied")
    with pytest.raises(WrongState):
        run(engine, case.id, "archive")
    run(engine, case.id, "visit_satisfied")
    case = run(engine, case.id, "archive")
    assert (case.state, case.final) == ("archived", True)
    assert _iso(case.data["archived_at"]) == clock.now()


def test_archive_is_refused_to_a_handler(engine: Engine) -> None:
    case = drive(engine, case_in(engine, "replied").id, "visit_satisfied")
    with pytest.raises(RoleRefused):
        run(engine, case.id, "archive", actor=HANDLER)
    assert run(engine, case.id, "archive", actor=CLERK).state == "archived"


def test_unsatisfied_petitioner_work_continues_and_case_is_archived_after_next_visit(
        engine: Engine) -> None:
    case = case_in(engine, "replied")
    case = run(engine, case.id, "visit_unsatisfied")
    with pytest.raises(GuardRefused):
        run(engine, case.id, "archive")
    case = run(engine, case.id, "continue_work")
    assert case.state == "follow_up.continued_work"
    engine.fire(case.id, "thought_work", actor=HANDLER, data={"notes": "explained the ruling"})
    case = run(engine, case.id, "visit_satisfied")
    assert case.data["visit_count"] == 2
    case = run(engine, case.id, "archive")
    assert case.state == "archived"
    assert [e.name for e in engine.history(case.id)][-5:] == [
        "return_visit", "continue_work", "thought_work", "return_visit", "archive"]


def test_continue_work_is_refused_when_the_petitioner_is_satisfied(engine: Engine) -> None:
    case = drive(engine, case_in(engine, "replied").id, "visit_satisfied")
    with pytest.raises(GuardRefused):
        run(engine, case.id, "continue_work")


# -- review and re-review ---------------------------------------------------------


@pytest.mark.parametrize("source", ["replied", "follow_up.visited", "follow_up.continued_work"])
def test_request_review_within_30_days_from_each_source(
        engine: Engine, clock: FrozenClock, source: str) -> None:
    case = case_in(engine, source)
    clock.advance(days=10)
    case = run(engine, case.id, "request_review")
    assert case.state == "review.requested"
    assert _iso(case.data["review_requested_at"]) == clock.now()


def test_request_review_on_the_30th_day_after_the_reply_is_allowed(
        engine: Engine, clock: FrozenClock) -> None:
    case = case_in(engine, "replied")
    clock.advance(days=30)
    assert run(engine, case.id, "request_review").state == "review.requested"


def test_request_review_more_than_30_days_after_the_reply_is_refused(
        engine: Engine, clock: FrozenClock) -> None:
    case = case_in(engine, "replied")
    clock.advance(days=31)
    before = snapshot(engine, case.id)
    with pytest.raises(WindowClosed, match="review_request"):
        run(engine, case.id, "request_review")
    assert snapshot(engine, case.id) == before


def test_late_request_review_cannot_be_rescued_by_sending_a_newer_reply_date(
        engine: Engine, clock: FrozenClock) -> None:
    case = case_in(engine, "replied")
    clock.advance(days=31)
    before = snapshot(engine, case.id)
    with pytest.raises(OVERRIDE_REFUSED):
        run(engine, case.id, "request_review", replied_at=clock.now().isoformat())
    assert snapshot(engine, case.id) == before


def test_request_review_is_refused_when_the_petitioner_is_satisfied(engine: Engine) -> None:
    case = drive(engine, case_in(engine, "replied").id, "visit_satisfied")
    with pytest.raises(GuardRefused):
        run(engine, case.id, "request_review")


def test_request_review_is_refused_to_a_reviewer(engine: Engine) -> None:
    case = case_in(engine, "replied")
    with pytest.raises(RoleRefused, match="clerk"):
        run(engine, case.id, "request_review", actor="reviewer:qian")


def test_answer_review_records_the_result(engine: Engine, clock: FrozenClock) -> None:
    case = case_in(engine, "review.requested")
    clock.advance(days=20)
    case = run(engine, case.id, "answer_review", review_result="changed")
    assert case.state == "review.answered"
    assert case.data["review_result"] == "changed"
    assert _iso(case.data["review_answered_at"]) == clock.now()


def test_answer_review_is_refused_to_a_clerk(engine: Engine) -> None:
    case = case_in(engine, "review.requested")
    with pytest.raises(RoleRefused, match="reviewer"):
        run(engine, case.id, "answer_review", actor=CLERK)


def test_request_rereview_within_30_days_of_the_review_answer(
        engine: Engine, clock: FrozenClock) -> None:
    case = case_in(engine, "review.answered")
    clock.advance(days=30)
    case = run(engine, case.id, "request_rereview")
    assert case.state == "review.rereview_requested"
    assert _iso(case.data["rereview_requested_at"]) == clock.now()


def test_request_rereview_more_than_30_days_after_the_review_answer_is_refused(
        engine: Engine, clock: FrozenClock) -> None:
    case = case_in(engine, "review.answered")
    clock.advance(days=31)
    before = snapshot(engine, case.id)
    with pytest.raises(WindowClosed, match="rereview_request"):
        run(engine, case.id, "request_rereview")
    assert snapshot(engine, case.id) == before


def test_answer_rereview_records_the_result(engine: Engine) -> None:
    case = case_in(engine, "review.rereview_requested")
    case = run(engine, case.id, "answer_rereview", rereview_result="revoked")
    assert case.state == "review.rereviewed"
    assert case.data["rereview_result"] == "revoked"
    assert "rereview_answered_at" in case.data


def test_terminate_after_rereview_ends_the_case(engine: Engine) -> None:
    case = case_in(engine, "review.rereviewed")
    case = run(engine, case.id, "terminate")
    assert (case.state, case.final) == ("terminated", True)
    assert case.data["closure_reason"] == "re-review concluded"
    assert _last_event(engine, case.id).role == "supervisor"


def test_terminate_before_the_rereview_is_refused_by_state(engine: Engine) -> None:
    case = case_in(engine, "review.answered")
    with pytest.raises(WrongState, match=re.escape("review.rereviewed")):
        run(engine, case.id, "terminate")


# -- persistent petitioning: report for closure ---------------------------------------


@pytest.mark.parametrize("source", ["follow_up.continued_work", "review.rereviewed"])
def test_report_closure_needs_the_persistent_flag_first(engine: Engine, source: str) -> None:
    case = case_in(engine, source)
    before = snapshot(engine, case.id)
    with pytest.raises(GuardRefused, match="persistent_petitioning"):
        run(engine, case.id, "report_closure")
    assert snapshot(engine, case.id) == before
    run(engine, case.id, "flag_persistent")
    case = run(engine, case.id, "report_closure")
    assert (case.state, case.final) == ("reported_closed", True)
    assert _last_event(engine, case.id).from_state == source


def test_report_closure_cannot_be_forced_by_sending_the_flag_in_the_input(engine: Engine) -> None:
    case = case_in(engine, "follow_up.continued_work")
    before = snapshot(engine, case.id)
    with pytest.raises(OVERRIDE_REFUSED):
        run(engine, case.id, "report_closure", persistent_petitioning=True)
    assert snapshot(engine, case.id) == before


def test_report_closure_is_refused_to_a_leader(engine: Engine) -> None:
    case = case_in(engine, "follow_up.continued_work")
    run(engine, case.id, "flag_persistent")
    with pytest.raises(RoleRefused, match="supervisor"):
        run(engine, case.id, "report_closure", actor=LEADER)


# -- activities ----------------------------------------------------------------------


def _accepted_with_its_people(engine: Engine) -> Case:
    """An accepted case whose leader and handler are already named (before the four fixes):
    the work recorded on a case is its people's."""
    case = case_in(engine, "accepted")
    engine.assign(case.id, "leader", LEADER_ID, actor=LEADER)
    return engine.assign(case.id, "handler", FOUR_FIXES["handler"], actor=LEADER)


def test_home_visit_is_recorded_without_changing_state(engine: Engine) -> None:
    case = _accepted_with_its_people(engine)
    after = engine.fire(case.id, "home_visit", actor=LEADER,
                        data={"visitor": "chen", "notes": "met the family"})
    assert after.state == "accepted"
    assert after.row_version == case.row_version + 1
    assert after.data == case.data
    ev = _last_event(engine, case.id)
    assert (ev.kind, ev.name, ev.from_state, ev.to_state) == (
        "activity", "home_visit", "accepted", "accepted")
    assert ev.details == {"visitor": "chen", "notes": "met the family"}


def test_home_visit_requires_the_visitor(engine: Engine) -> None:
    case = _accepted_with_its_people(engine)
    with pytest.raises(MissingFields, match="visitor"):
        engine.fire(case.id, "home_visit", actor=LEADER, data={"notes": "n"})


def test_home_visit_is_refused_before_acceptance(engine: Engine) -> None:
    case = open_petition(engine)
    with pytest.raises(WrongState):
        engine.fire(case.id, "home_visit", actor=LEADER, data={"visitor": "chen"})


def test_coordination_meeting_records_attendees_and_agreement(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    data = {"attendees": ["court", "police", "township"], "agreed": "court re-examines"}
    after = engine.fire(case.id, "coordination_meeting", actor=SUPERVISOR, data=data)
    assert after.state == "handling.investigating"
    assert _last_event(engine, case.id).details == data


def test_coordination_meeting_needs_at_least_two_attendees(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    before = snapshot(engine, case.id)
    with pytest.raises(GuardRefused, match="len"):
        engine.fire(case.id, "coordination_meeting", actor=SUPERVISOR,
                    data={"attendees": ["court"], "agreed": "nothing"})
    assert snapshot(engine, case.id) == before


def test_coordination_meeting_is_refused_in_replied(engine: Engine) -> None:
    case = case_in(engine, "replied")
    with pytest.raises(WrongState):
        engine.fire(case.id, "coordination_meeting", actor=SUPERVISOR,
                    data={"attendees": ["a", "b"], "agreed": "x"})


def test_funds_raised_adds_up_into_funds_total(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    engine.fire(case.id, "funds_raised", actor=LEADER,
                data={"amount": 150000, "funded_by": "county finance"})
    case = engine.fire(case.id, "funds_raised", actor=LEADER, data={"amount": 250000.5})
    assert case.data["funds_total"] == pytest.approx(400000.5)
    assert case.state == "handling.investigating"
    ev = _last_event(engine, case.id)
    assert ev.changes == {"funds_total": pytest.approx(400000.5)}


@pytest.mark.parametrize("amount", [0, -100])
def test_funds_raised_must_be_positive(engine: Engine, amount: float) -> None:
    case = case_in(engine, "handling.investigating")
    with pytest.raises(GuardRefused, match="amount > 0"):
        engine.fire(case.id, "funds_raised", actor=LEADER, data={"amount": amount})
    assert "funds_total" not in engine.get_case(case.id).data


def test_funds_raised_is_refused_to_a_handler_and_in_accepted(engine: Engine) -> None:
    case = case_in(engine, "handling.investigating")
    with pytest.raises(RoleRefused):
        engine.fire(case.id, "funds_raised", actor=HANDLER, data={"amount": 10})
    accepted = case_in(engine, "accepted")
    with pytest.raises(WrongState):
        engine.fire(accepted.id, "funds_raised", actor=LEADER, data={"amount": 10})


@pytest.mark.parametrize("state", ["accepted", "handling.decided", "replied",
                                   "follow_up.continued_work", "review.requested"])
def test_thought_work_is_recorded_in_every_working_state(engine: Engine, state: str) -> None:
    case = _accepted_with_its_people(engine) if state == "accepted" else case_in(engine, state)
    after = engine.fire(case.id, "thought_work", actor=HANDLER,
                        data={"notes": "explained the law"})
    assert after.state == state
    assert _last_event(engine, case.id).details == {"notes": "explained the law"}


def test_thought_work_requires_notes(engine: Engine) -> None:
    case = _accepted_with_its_people(engine)
    with pytest.raises(MissingFields, match="notes"):
        engine.fire(case.id, "thought_work", actor=HANDLER, data={})


def test_flag_persistent_sets_the_flag_only_in_follow_up_or_review(engine: Engine) -> None:
    early = case_in(engine, "replied")
    with pytest.raises(WrongState):
        run(engine, early.id, "flag_persistent")
    case = case_in(engine, "review.answered")
    case = run(engine, case.id, "flag_persistent")
    assert case.data["persistent_petitioning"] is True
    assert case.state == "review.answered"
    assert _last_event(engine, case.id).details == {"reason": "fifth visit, same claim"}


def test_flag_persistent_is_refused_to_a_handler(engine: Engine) -> None:
    case = case_in(engine, "follow_up.continued_work")
    with pytest.raises(RoleRefused):
        run(engine, case.id, "flag_persistent", actor=HANDLER)


# -- a whole case, and what may be done now ------------------------------------------


def test_full_lifecycle_history_is_chained_and_ordered(engine: Engine, clock: FrozenClock) -> None:
    case = open_petition(engine)
    steps = ["accept", "assign", "extend", "decide", "reply", "visit_unsatisfied",
             "continue_work", "visit_satisfied", "archive"]
    for step in steps:
        clock.advance(days=2)
        case = run(engine, case.id, step)
    history = engine.history(case.id)
    assert [e.seq for e in history] == list(range(1, len(steps) + 2))
    assert [e.name for e in history] == ["open", "accept", "assign", "extend", "decide", "reply",
                                         "return_visit", "continue_work", "return_visit",
                                         "archive"]
    assert all(a.to_state == b.from_state for a, b in itertools.pairwise(history))
    assert case.row_version == len(history)
    assert engine.verify(case.id) == []


def test_available_triggers_lists_what_the_actor_may_do_and_why_not(engine: Engine) -> None:
    case = case_in(engine, "follow_up.visited")
    options = {o.name: o for o in engine.available_triggers(case.id, ARCHIVIST)}
    assert options["archive"].allowed is False
    assert "[guard]" in (options["archive"].reason or "")
    assert options["continue_work"].allowed is False
    assert "[role]" in (options["continue_work"].reason or "")
    assert "return_visit" not in options  # not a trigger from follow_up.visited
    assert options["thought_work"].kind == "activity"
    assert options["thought_work"].allowed is False

    handler_options = {o.name: o for o in engine.available_triggers(case.id, HANDLER)}
    assert handler_options["continue_work"].allowed is True
    assert handler_options["request_review"].allowed is False  # the clerk's trigger
    assert handler_options["thought_work"].allowed is True


def test_available_triggers_in_registered_offers_triage_to_triage(engine: Engine) -> None:
    case = open_petition(engine)
    allowed = {o.name for o in engine.available_triggers(case.id, TRIAGE) if o.allowed}
    assert allowed == {"accept", "refer", "not_accept", "divert"}


def test_the_engine_and_the_transitions_library_agree_on_every_move() -> None:
    """The one test of internals: the command path walks the compiled machine's transition
    table (``CompiledWorkflow.candidates``, in the rules' order); the ``transitions``
    library's own dispatch on a probe reaches the same state for every (state, trigger)
    with a permissive attempt. It pairs two internal modules, so it imports them."""
    from casework import Actor, load_definition
    from casework.machine import CompiledWorkflow
    from casework.rules import Attempt, guard_names

    from tests.conftest import PETITION

    wf = CompiledWorkflow(load_definition(PETITION))
    everyone = Actor("x", frozenset(wf.spec.roles))
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def walk(leaf: str, trigger: str, attempt: Attempt) -> str:
        for ct, dest in wf.candidates(leaf, trigger):
            if attempt.admit(ct, lambda: None):  # type: ignore[arg-type,return-value]
                return dest
        raise attempt.best_refusal()

    for leaf in wf.tree.leaves:
        for trigger in wf.triggers_from(leaf):
            names = guard_names(wf, {}, {}, everyone, now, leaf)
            ours = Attempt(everyone, {}, names, check_required=False)
            lib = Attempt(everyone, {}, names, check_required=False)
            try:
                mine = walk(leaf, trigger, ours)
            except Exception as e:  # a guard that needs input refuses on both sides
                mine = type(e).__name__
            try:
                theirs = wf.fire_on_machine(leaf, trigger, lib, lambda: None)  # type: ignore[arg-type,return-value]
            except Exception as e:
                theirs = type(e).__name__
            assert mine == theirs, (leaf, trigger)
