"""The glue shared by the state-machine-library peers (python-statemachine, transitions).

Per command, one transaction on one SQLAlchemy Core connection: read the case row, build
the case object and its machine (one machine per case object, as both libraries are
usually used: a request loads a case and binds a machine to it), let the library move the
case (it refuses a wrong state or a false guard), then write the case row back with a
version check and insert a history row.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import INITIAL, check_command, computed, opening, utcnow
from .sa_glue import SqlStore


class PetitionCase:
    """The case object a machine is bound to: its id, state and data."""

    def __init__(self, case_id: str, state: str, data: dict[str, Any]) -> None:
        self.id = case_id
        self.state = state
        self.data = data


class MachinePeer:
    """Read, move with the library (:meth:`move`), write back; one transaction per command."""

    case_class: type[PetitionCase] = PetitionCase

    def __init__(self, db: Path, synchronous: str) -> None:
        self.store = SqlStore(db, synchronous)

    def move(self, case: PetitionCase, trigger: str, values: dict[str, Any]) -> None:
        """Move ``case`` by ``trigger`` (``values``: the case data under the input)."""
        raise NotImplementedError

    def open_case(self, data: Mapping[str, Any], actor: str) -> str:
        role, who, now, values = opening(data, actor)
        return self.store.add(INITIAL, values, role, who, now, values)

    def fire(self, case_id: str, trigger: str, actor: str, data: Mapping[str, Any]) -> None:
        role, who = check_command(trigger, actor, data)
        s = self.store
        with s.conn.begin():
            row = s.load(case_id)
            case = self.case_class(row.id, row.state, row.data)
            old_state = case.state
            now = utcnow()
            self.move(case, trigger, {**case.data, **data})
            changes = {**data, **computed(trigger, case.data, who, now.isoformat())}
            case.data = {**case.data, **changes}
            s.save(row, trigger, old_state, case.state, case.data, role, who, now, changes)

    def check(self) -> dict[str, int]:
        return self.store.check()

    def close(self) -> None:
        self.store.close()
