"""Plain records passed between the store and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class CaseRecord:
    id: str
    workflow: str
    version: str
    state: str
    final: bool
    data: dict[str, Any]
    escalation_level: int
    opened_at: datetime
    updated_at: datetime
    row_version: int
    last_seq: int
    last_hash: str
    clocks: dict[str, Any] = field(default_factory=dict)
    at_risk: bool = False
    overdue_since: datetime | None = None
    party_key: str | None = None
    closed_at: datetime | None = None
    seal: str | None = None
    unit: str | None = None
    next_due_at: datetime | None = None
    next_deadline: str | None = None


@dataclass(slots=True)
class EventRecord:
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
    prev_hash: str
    hash: str
    key_id: str | None = None
    command_digest: str | None = None


@dataclass(slots=True)
class TimerRecord:
    id: int
    case_id: str | None
    workflow: str
    kind: str
    name: str
    state: str | None
    due_at: datetime
    status: str
    payload: dict[str, Any]


@dataclass(slots=True)
class NewTimer:
    """A timer to insert with a command."""

    case_id: str | None
    workflow: str
    kind: str
    name: str
    state: str | None
    due_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
