"""Stored records as the public values a host receives."""

from __future__ import annotations

from .clock import from_db
from .persistence import CaseRecord, EventRecord, TimerRecord
from .types import Case, Event, EventKind, Timer, TimerKind, TimerStatus


def case_of(rec: CaseRecord) -> Case:
    return Case(rec.id, rec.workflow, rec.version, rec.state, rec.data, rec.row_version,
                rec.escalation_level, from_db(rec.opened_at), from_db(rec.updated_at), rec.final,
                rec.at_risk, from_db(rec.overdue_since) if rec.overdue_since else None,
                {k: v for k, v in rec.clocks.items() if not k.startswith("_")})


def event_of(e: EventRecord) -> Event:
    return Event(e.case_id, e.seq, EventKind(e.kind), e.name, e.from_state, e.to_state, e.actor,
                 e.role, from_db(e.at), e.changes, e.details, e.idempotency_key, e.hash)


def timer_of(t: TimerRecord) -> Timer:
    return Timer(t.id, t.case_id, t.workflow, TimerKind(t.kind), t.name, t.state,
                 from_db(t.due_at), TimerStatus(t.status),
                 {k: v for k, v in t.payload.items() if k != "then"})
