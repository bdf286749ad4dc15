"""What-if: proposed commands and the passing of time, run on a copy of a case.

A leader about to grant an extension asks what the case would meet: the copy of the case
(its whole history, through the ledger) is put in a throwaway database behind an engine
built like the real one (the same workflows, host hooks, calendars and keys), the proposed
commands are sent at their instants, and the scheduler is run at each instant a timer of
the case falls due until ``until``. The same is done with no command, for comparison.
Nothing is written to the real database: the copy is deleted afterwards.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from .clock import FrozenClock
from .errors import CaseworkError, InvalidInput
from .types import Case, Deadline, Event, EventKind, Timer


@dataclass(frozen=True)
class Proposal:
    """A command to try: ``trigger`` by ``actor`` with ``data``, at ``at`` (default: now)."""

    trigger: str
    actor: str
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """What a case meets on one course: the events from now to ``until`` (commands,
    warnings, escalations), its deadlines and pending timers at ``until``, the case then,
    and the proposal that was refused, if one was (with why)."""

    events: tuple[Event, ...]
    case: Case
    deadlines: tuple[Deadline, ...]
    pending: tuple[Timer, ...]
    refused: tuple[Proposal, str] | None = None

    @property
    def warnings(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind is EventKind.WARNING)

    @property
    def escalations(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind in (EventKind.ESCALATION, EventKind.BREACH))


@dataclass(frozen=True)
class WhatIf:
    """The case's course with the proposed commands, and without them."""

    until: datetime
    proposed: Outcome
    unchanged: Outcome


class _Engine(Protocol):
    """What what-if needs of an engine: its public commands and questions."""

    def export_cases(self, out: Any, *, case_ids: Any = ...) -> int: ...
    def import_cases(self, inp: Any) -> Any: ...
    def fire(self, case_id: str, trigger: str, *, actor: Any, data: Any = ...) -> Case: ...
    def run_due(self, now: datetime | None = ...) -> Any: ...
    def history(self, case_id: str) -> list[Event]: ...
    def get_case(self, case_id: str) -> Case: ...
    def deadlines(self, case_id: str) -> list[Deadline]: ...
    def pending_timers(self, case_id: str) -> list[Timer]: ...
    def close(self) -> None: ...


Sandbox = Callable[[str, FrozenClock], _Engine]  # a database URL and a clock -> an engine


def simulate(source: _Engine, case_id: str, proposals: Sequence[Proposal], until: datetime,
             now: datetime, sandbox: Sandbox) -> WhatIf:
    """Run ``proposals`` and the scheduler up to ``until`` on copies of the case."""
    if until < now:
        raise InvalidInput(f"what-if: until ({until.isoformat()}) is before now")
    for p in proposals:
        if p.at is not None and not now <= p.at <= until:
            raise InvalidInput(f"what-if: {p.trigger!r} at {p.at.isoformat()} is not between "
                               "now and until")
    buf = io.StringIO()
    source.export_cases(buf, case_ids=[case_id])
    ledger = buf.getvalue()
    return WhatIf(until, _course(ledger, case_id, proposals, until, now, sandbox),
                  _course(ledger, case_id, (), until, now, sandbox))


def _course(ledger: str, case_id: str, proposals: Sequence[Proposal], until: datetime,
            now: datetime, sandbox: Sandbox) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="casework-whatif-") as tmp:
        clock = FrozenClock(now)
        engine = sandbox(f"sqlite:///{Path(tmp) / 'what-if.db'}", clock)
        try:
            engine.import_cases(io.StringIO(ledger))
            before = len(engine.history(case_id))
            refused: tuple[Proposal, str] | None = None
            ordered = sorted(proposals, key=lambda p: p.at or now)
            for p in ordered:
                _advance(engine, clock, case_id, p.at or now)
                try:
                    engine.fire(case_id, p.trigger, actor=p.actor, data=p.data)
                except CaseworkError as e:
                    refused = (p, str(e))
                    break
            _advance(engine, clock, case_id, until)
            return Outcome(tuple(engine.history(case_id)[before:]), engine.get_case(case_id),
                           tuple(engine.deadlines(case_id)), tuple(engine.pending_timers(case_id)),
                           refused)
        finally:
            engine.close()


def _advance(engine: _Engine, clock: FrozenClock, case_id: str, to: datetime) -> None:
    """Move the clock to ``to``, running the scheduler at each instant a timer of the case
    falls due on the way (as a scheduler running all along would)."""
    for _ in range(10_000):
        due = [t.due_at for t in engine.pending_timers(case_id) if t.due_at <= to]
        if not due:
            break
        clock.set(max(min(due), clock.now()))
        engine.run_due()
    clock.set(max(to, clock.now()))
    engine.run_due()
