"""Shared helpers for the petition tests: actors, standard commands, and driving a case.

Not a test module (pytest does not collect it); the test files import it by name
as ``tests.petition_steps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from casework import Case, Engine, Event

# Actors, in the short form "role[,role]:id". The leader's id is the one the
# four fixes name as the case's leader.
CLERK = "clerk:li"
TRIAGE = "triage:zhao"
LEADER_ID = "chen"
LEADER = f"leader:{LEADER_ID}"
OTHER_LEADER = "leader:ma"
HANDLER = "handler:wu"
SUPERVISOR = "supervisor:sun"
REVIEWER = "reviewer:qian"
ARCHIVIST = "archivist:zhou"

OPEN_DATA: dict[str, Any] = {
    "petitioner_name": "Wang Fang",
    "petitioner_phone": "13800000000",
    "channel": "visit",
    "source": "direct",
    "summary": "dispute over a court enforcement",
    "concerns": "court",
}

FOUR_FIXES: dict[str, Any] = {
    "leader": LEADER_ID,
    "handler": "wu",
    "unit": "county court",
    "due_date": "2026-03-06",
    "target": "enforcement completed and the petitioner informed",
}


@dataclass(frozen=True)
class Command:
    trigger: str
    actor: str
    data: Mapping[str, Any]


# The standard, successful command for each trigger (from its usual source).
STANDARD: dict[str, Command] = {
    "accept": Command("accept", TRIAGE, {}),
    "refer": Command("refer", TRIAGE, {"referred_to": "city procuratorate",
                                       "triage_reason": "the procuratorate has jurisdiction"}),
    "not_accept": Command("not_accept", TRIAGE, {"triage_reason": "already concluded"}),
    "divert": Command("divert", TRIAGE, {"triage_reason": "belongs in the litigation procedure"}),
    "assign": Command("assign", LEADER, FOUR_FIXES),
    "extend": Command("extend", LEADER, {"extension_days": 20,
                                         "extension_reason": "several bodies are involved"}),
    "suspend": Command("suspend", HANDLER, {"suspension_reason": "the petitioner is abroad"}),
    "resume": Command("resume", HANDLER, {}),
    "decide": Command("decide", HANDLER, {"outcome": "partial_correction",
                                          "decision_summary": "the fee is refunded"}),
    "reply": Command("reply", HANDLER, {"reply_summary": "written reply delivered"}),
    "visit_unsatisfied": Command("return_visit", HANDLER, {"satisfaction": "unsatisfied"}),
    "visit_satisfied": Command("return_visit", HANDLER, {"satisfaction": "satisfied"}),
    "continue_work": Command("continue_work", HANDLER, {}),
    "archive": Command("archive", ARCHIVIST, {}),
    "request_review": Command("request_review", CLERK, {}),
    "answer_review": Command("answer_review", REVIEWER, {"review_result": "upheld"}),
    "request_rereview": Command("request_rereview", CLERK, {}),
    "answer_rereview": Command("answer_rereview", REVIEWER, {"rereview_result": "upheld"}),
    "terminate": Command("terminate", SUPERVISOR, {"closure_reason": "re-review concluded"}),
    "report_closure": Command("report_closure", SUPERVISOR,
                              {"closure_reason": "persistent petitioning after lawful handling"}),
    "flag_persistent": Command("flag_persistent", SUPERVISOR, {"reason": "fifth visit, same claim"}),
}

# The commands that bring a freshly opened case to each non-final leaf state.
_TO_HANDLING = ("accept", "assign")
_TO_REPLIED = (*_TO_HANDLING, "decide", "reply")
_TO_REVIEW = (*_TO_REPLIED, "request_review")
PATHS: dict[str, tuple[str, ...]] = {
    "registered": (),
    "accepted": ("accept",),
    "handling.investigating": _TO_HANDLING,
    "handling.suspended": (*_TO_HANDLING, "suspend"),
    "handling.decided": (*_TO_HANDLING, "decide"),
    "replied": _TO_REPLIED,
    "follow_up.visited": (*_TO_REPLIED, "visit_unsatisfied"),
    "follow_up.continued_work": (*_TO_REPLIED, "visit_unsatisfied", "continue_work"),
    "review.requested": _TO_REVIEW,
    "review.answered": (*_TO_REVIEW, "answer_review"),
    "review.rereview_requested": (*_TO_REVIEW, "answer_review", "request_rereview"),
    "review.rereviewed": (*_TO_REVIEW, "answer_review", "request_rereview", "answer_rereview"),
}


def open_petition(engine: Engine, **overrides: Any) -> Case:
    """Open a petition case as the clerk, with the standard registration data."""
    return engine.open_case("petition", {**OPEN_DATA, **overrides}, actor=CLERK)


def run(engine: Engine, case_id: str, step: str, *, actor: str | None = None,
        **data: Any) -> Case:
    """Fire the standard command ``step``; keyword arguments replace or add input fields."""
    cmd = STANDARD[step]
    return engine.fire(case_id, cmd.trigger, actor=actor or cmd.actor, data={**cmd.data, **data})


def drive(engine: Engine, case_id: str, *steps: str) -> Case:
    """Run several standard commands in order; return the case after the last."""
    case = engine.get_case(case_id)
    for step in steps:
        case = run(engine, case_id, step)
    return case


def case_in(engine: Engine, state: str) -> Case:
    """A new case driven to ``state`` by the standard path."""
    case = open_petition(engine)
    case = drive(engine, case.id, *PATHS[state])
    assert case.state == state, (case.state, state)
    return case


@dataclass(frozen=True)
class Snapshot:
    """What the store holds for one case: compared before and after a refused command."""

    state: str
    row_version: int
    data: dict[str, Any]
    events: tuple[Event, ...]


def snapshot(engine: Engine, case_id: str) -> Snapshot:
    case = engine.get_case(case_id)
    return Snapshot(case.state, case.row_version, dict(case.data),
                    tuple(engine.history(case_id)))


def count_cases(engine: Engine) -> int:
    """How many cases the engine's database holds."""
    return engine.stored_counts()[0]
