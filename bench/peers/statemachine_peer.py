"""Peer: python-statemachine, one machine per case object, persisted by hand (SQLAlchemy Core).

The petition's states (casework's nested states flattened to their leaves, with the same
dotted values) and transitions, with the guards as ``cond`` / ``unless`` methods. The glue
(``machine_glue.MachinePeer``) loads the case row, binds a ``PetitionMachine`` to the case
object (``state_field="state"``), sends the event, and writes the row and a history row
in the same transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from statemachine import State, StateMachine
from statemachine.exceptions import TransitionNotAllowed

from .common import Refused, four_fixes_set, is_satisfied
from .machine_glue import MachinePeer, PetitionCase


class PetitionMachine(StateMachine):
    """The path of ``workflows/petition.yaml`` that the benchmark drives."""

    registered = State(initial=True, value="registered")
    accepted = State(value="accepted")
    investigating = State(value="handling.investigating")
    decided = State(value="handling.decided")
    replied = State(value="replied")
    visited = State(value="follow_up.visited")
    continued_work = State(value="follow_up.continued_work")
    archived = State(final=True, value="archived")

    accept = registered.to(accepted)
    assign = accepted.to(investigating, cond="four_fixes")
    decide = investigating.to(decided)
    reply = decided.to(replied)
    return_visit = replied.to(visited) | continued_work.to(visited)
    continue_work = visited.to(continued_work, unless="satisfied")
    archive = visited.to(archived, cond="satisfied")

    def four_fixes(self, values: dict[str, Any]) -> bool:
        return four_fixes_set(values)

    def satisfied(self, values: dict[str, Any]) -> bool:
        return is_satisfied(values)


class StateMachinePeer(MachinePeer):
    def move(self, case: PetitionCase, trigger: str, values: dict[str, Any]) -> None:
        sm = PetitionMachine(case, state_field="state")
        try:
            sm.send(trigger, values=values)
        except TransitionNotAllowed as e:
            raise Refused(str(e)) from None


def make(db: Path, synchronous: str) -> StateMachinePeer:
    return StateMachinePeer(db, synchronous)
