"""Peer: ``transitions``, one machine per case object, persisted by hand (SQLAlchemy Core).

The petition's leaf states and transitions as ``transitions`` declares them, the guards as
``conditions`` / ``unless`` on the case object. The glue (``machine_glue.MachinePeer``)
loads the case row, builds ``Machine(model=case, initial=case.state)`` for it, calls the
trigger, and writes the row and a history row in the same transaction.

Building a ``Machine`` costs more than firing it, so a non-default variant,
``transitions-shared`` (``make_shared``), keeps one machine for the process and per command
``add_model(case)``, triggers, ``remove_model(case)``: the way ``transitions`` documents for
many models. (casework itself keeps one machine per workflow version and moves a
throw-away probe through ``machine.events[trigger]``; see ``engine/machine.py``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transitions import EventData, Machine, MachineError

from .common import Refused, four_fixes_set, is_satisfied
from .machine_glue import MachinePeer, PetitionCase

STATES = ["registered", "accepted", "handling.investigating", "handling.decided", "replied",
          "follow_up.visited", "follow_up.continued_work", "archived"]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "accept", "source": "registered", "dest": "accepted"},
    {"trigger": "assign", "source": "accepted", "dest": "handling.investigating",
     "conditions": "four_fixes"},
    {"trigger": "decide", "source": "handling.investigating", "dest": "handling.decided"},
    {"trigger": "reply", "source": "handling.decided", "dest": "replied"},
    {"trigger": "return_visit", "source": ["replied", "follow_up.continued_work"],
     "dest": "follow_up.visited"},
    {"trigger": "continue_work", "source": "follow_up.visited",
     "dest": "follow_up.continued_work", "unless": "satisfied"},
    {"trigger": "archive", "source": "follow_up.visited", "dest": "archived",
     "conditions": "satisfied"},
]


class TransitionsCase(PetitionCase):
    """The case object, with the guards the machine calls (``send_event=True``)."""

    def four_fixes(self, event: EventData) -> bool:
        return four_fixes_set(event.kwargs["values"])

    def satisfied(self, event: EventData) -> bool:
        return is_satisfied(event.kwargs["values"])


def _trigger(case: PetitionCase, trigger: str, values: dict[str, Any]) -> None:
    """Fire ``trigger`` on the case object's machine; :class:`Refused` if it may not move."""
    try:
        moved = case.trigger(trigger, values=values)  # type: ignore[attr-defined]
    except (MachineError, AttributeError) as e:
        raise Refused(f"{trigger!r} is not allowed in {case.state!r}: {e}") from None
    if not moved:
        raise Refused(f"the guard of {trigger!r} does not hold")


class TransitionsPeer(MachinePeer):
    case_class = TransitionsCase

    def move(self, case: PetitionCase, trigger: str, values: dict[str, Any]) -> None:
        Machine(model=case, states=STATES, transitions=TRANSITIONS, initial=case.state,
                auto_transitions=False, send_event=True)
        _trigger(case, trigger, values)


class SharedMachinePeer(TransitionsPeer):
    """One machine for the process; each command adds the case object to it and removes it."""

    def __init__(self, db: Path, synchronous: str) -> None:
        super().__init__(db, synchronous)
        self.machine = Machine(model=None, states=STATES, transitions=TRANSITIONS,
                               initial=STATES[0], auto_transitions=False, send_event=True)

    def move(self, case: PetitionCase, trigger: str, values: dict[str, Any]) -> None:
        self.machine.add_model(case, initial=case.state)
        try:
            _trigger(case, trigger, values)
        finally:
            self.machine.remove_model(case)


def make(db: Path, synchronous: str) -> TransitionsPeer:
    return TransitionsPeer(db, synchronous)


def make_shared(db: Path, synchronous: str) -> SharedMachinePeer:
    return SharedMachinePeer(db, synchronous)
