"""The typed request and response bodies of the HTTP API (the OpenAPI schema is made
from these), with examples from the petition workflow.

Responses carry the ``to_dict()`` forms of the engine's values: datetimes as ISO 8601
in UTC, durations in seconds, personal (``pii``) fields as ``***`` unless the actor may
read them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_T = "2026-03-03T01:00:00+00:00"
CASE_ID = "0195f3a2c4d87b6e9a1f2c3d4e5f6a7b"

OPEN_EXAMPLE = {"data": {"petitioner_name": "Wang Fang", "petitioner_phone": "13800000000",
                         "channel": "visit", "source": "direct", "concerns": "court",
                         "summary": "dispute over a court enforcement"}}
ASSIGN_EXAMPLE = {"data": {"leader": "chen", "handler": "wu", "unit": "county court",
                           "due_date": "2026-05-01",
                           "target": "enforcement completed and the petitioner informed"}}

CASE_EXAMPLE = {
    "id": CASE_ID, "workflow": "petition", "version": "3f9a1c2b7d4e",
    "state": "accepted",
    "data": {"petitioner_name": "***", "petitioner_phone": "***", "channel": "visit",
             "source": "direct", "concerns": "court", "summary": "dispute over a court enforcement",
             "first_handler": "li", "petition_count": 1, "accepted_at": _T},
    "row_version": 2, "escalation_level": 0, "opened_at": _T, "updated_at": _T,
    "final": False, "at_risk": False, "overdue_since": None,
    "clocks": {"handling": {"status": "running", "due": "2026-05-02T16:00:00+00:00"}},
}


NoticeName = Literal["opened", "transition", "activity", "warned", "escalated", "cycle",
                     "flagged", "report", "*"]


def _examples(*examples: Any) -> Any:
    """``json_schema_extra`` with examples for the OpenAPI schema."""
    return {"examples": list(examples)}


def _every_notice() -> list[NoticeName]:
    return ["*"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------
class OpenCase(_Body):
    """Open a case: its data (the actor comes from the credential)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_examples(OPEN_EXAMPLE))

    data: dict[str, Any] = Field(default_factory=dict, description="the case's fields")
    case_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,64}$",
                                description="the case's id, if the host gives one")


class Fire(_Body):
    """Fire a trigger or an activity: its input."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_examples(ASSIGN_EXAMPLE))

    data: dict[str, Any] = Field(default_factory=dict,
                                 description="the input (an activity's own fields)")


class ProposalIn(_Body):
    trigger: str = Field(max_length=200)
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime | None = Field(default=None, description="when (default: now)")


class WhatIfIn(_Body):
    """Proposed commands (sent as the authenticated actor) and how far to look ahead."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_examples({
        "proposals": [{"trigger": "extend",
                       "data": {"extension_days": 20, "extension_reason": "complex case"}}],
        "until": "2026-06-30T00:00:00+00:00"}))

    proposals: list[ProposalIn] = Field(default_factory=list, max_length=20)
    until: datetime


class WebhookIn(_Body):
    """A webhook subscription: where notices are posted, and which."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_examples({
        "url": "https://hooks.example.org/casework", "notices": ["escalated", "warned"],
        "workflow": "petition"}))

    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://")
    notices: list[NoticeName] = Field(default_factory=_every_notice, min_length=1, max_length=9)
    workflow: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=500)


# -- responses -----------------------------------------------------------------------------
class CaseOut(_Out):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_examples(CASE_EXAMPLE))

    id: str
    workflow: str
    version: str
    state: str
    data: dict[str, Any]
    row_version: int = Field(description="the case's ETag; send it back as If-Match")
    escalation_level: int
    opened_at: datetime
    updated_at: datetime
    final: bool
    at_risk: bool
    overdue_since: datetime | None
    clocks: dict[str, Any]


class EventOut(_Out):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_examples({
        "case_id": CASE_ID, "seq": 2, "kind": "transition", "name": "accept",
        "from_state": "registered", "to_state": "accepted", "actor": "zhao", "role": "triage",
        "at": _T, "changes": {"accepted_at": _T}, "details": {}, "idempotency_key": None,
        "hash": "9c1f..."}))

    case_id: str
    seq: int
    kind: str
    name: str
    from_state: str | None
    to_state: str | None
    actor: str | None
    role: str | None
    at: datetime
    changes: dict[str, Any]
    details: dict[str, Any]
    idempotency_key: str | None
    hash: str


class TriggerOptionOut(_Out):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_examples({
        "name": "archive", "kind": "transition", "allowed": False,
        "reason": "[role] the actor holds none of the roles archivist, clerk", "requires": [],
        "window": None, "window_closes": None}))

    name: str
    kind: str
    allowed: bool
    reason: str | None
    requires: list[str]
    window: str | None
    window_closes: datetime | None


class DeadlineOut(_Out):
    name: str
    status: str
    counting: str
    calendar: str
    calendar_data: str | None
    started: datetime
    due: datetime | None
    business_elapsed: float = Field(description="seconds")
    actual_elapsed: float = Field(description="seconds")
    time_left: float | None = Field(description="seconds; negative once overdue")
    allowed: float = Field(description="seconds")
    breaches: int
    provisional: bool
    paused: list[list[datetime | None]]


class TimerOut(_Out):
    id: int
    case_id: str | None
    workflow: str
    kind: str
    name: str
    state: str | None
    due_at: datetime
    status: str
    details: dict[str, Any]


class WorkflowSummary(_Out):
    name: str
    version: str
    title: str
    states: list[str]
    triggers: list[str]
    activities: list[str]


class WorkflowOut(_Out):
    name: str
    version: str
    title: str
    states: list[str]
    initial: str
    final_states: list[str]
    triggers: list[str]
    activities: list[str]
    roles: list[str]
    pii: list[str]
    timezone: str
    calendar: str
    definition: dict[str, Any]


class VersionsOut(_Out):
    workflow: str
    latest: str
    versions: list[str] = Field(description="stored versions, oldest first")


class StateCount(_Out):
    open: int
    overdue: int


class DiagramOut(_Out):
    workflow: str
    version: str
    mermaid: str
    counts: dict[str, StateCount]


class FigureOut(_Out):
    label: str
    value: float | None


class OverdueOut(_Out):
    cases: int
    average_days: float
    longest_days: float


class TimeInStateOut(_Out):
    stays: int
    average_days: float
    p90_days: float


class ResolutionOut(_Out):
    cases: int
    average_calendar_days: float
    average_working_days: float


class ReportOut(_Out):
    workflow: str
    start: str | None
    end: str | None
    by: str | None
    where: dict[str, list[Any]]
    figures: dict[str, FigureOut]
    rows: dict[str, dict[str, float | None]]
    overdue: OverdueOut
    escalations_by_rung: dict[str, int]
    time_in_state: dict[str, TimeInStateOut]
    time_to_resolve: dict[str, ResolutionOut]
    reassignments_by_unit: dict[str, int]
    source: Literal["figures", "events"]
    note: str | None = None


class CaseSummaryOut(_Out):
    """A case as a list shows it (personal fields of the summary masked)."""

    id: str
    workflow: str
    version: str
    state: str
    summary: dict[str, Any]
    next_deadline: str | None
    next_due_at: datetime | None
    escalation_level: int
    at_risk: bool
    overdue_since: datetime | None
    overdue: bool
    final: bool
    opened_at: datetime
    updated_at: datetime
    options: list[TriggerOptionOut]


class CasePageOut(_Out):
    """One page of a search or a worklist; ``cursor`` asks for the next (None: the last)."""

    items: list[CaseSummaryOut]
    cursor: str | None
    total: int | None


class VerifyOut(_Out):
    ok: bool
    problems: list[str]


class RefusedOut(_Out):
    trigger: str
    reason: str


class OutcomeOut(_Out):
    events: list[EventOut]
    case: CaseOut
    deadlines: list[DeadlineOut]
    pending: list[TimerOut]
    refused: RefusedOut | None


class WhatIfOut(_Out):
    until: datetime
    proposed: OutcomeOut
    unchanged: OutcomeOut


class ActorOut(_Out):
    id: str
    roles: list[str]
    unit: str | None


class WebhookOut(_Out):
    id: str
    url: str
    notices: list[str]
    workflow: str | None
    description: str | None
    owner: str
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret, shown this once")


class DeliveryOut(_Out):
    id: int
    notice_id: int
    notice: str
    case_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None


class NoticeOut(_Out):
    """What an SSE message's data and a webhook's body hold (personal fields masked)."""

    id: int
    notice: str
    at: datetime
    workflow: str
    case_id: str | None
    event: dict[str, Any] | None
    case: dict[str, Any] | None
    report: dict[str, Any] | None


class HealthOut(_Out):
    status: str
    backend: str | None = None
    schema_revision: str | None = None


class ProblemOut(BaseModel):
    """An RFC 9457 problem: ``rule`` names the rule that refused."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_examples({
        "type": "urn:casework:problem:guard-refused", "title": "The step's guard refused it",
        "status": 409, "rule": "guard", "case_id": CASE_ID, "state": "follow_up.visited",
        "trigger": "archive",
        "detail": "[guard] case ..., state 'follow_up.visited', trigger 'archive': guard "
                  "satisfaction == \"satisfied\" is false"}))

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    rule: str | None = None
