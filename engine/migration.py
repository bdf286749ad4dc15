"""Moving running cases to another version of their workflow.

A dry run lists, for every open case on another version, the state it would move
to or why it cannot move. The real run moves each case in its own transaction:
it records a ``migration`` event, reschedules the case's timers under the new
definition, and refuses a case whose state has no mapping (a state that also
exists in the new version maps to itself unless the mapping says otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .clock import Clock, to_db
from .errors import InvalidQuery
from .machine import CompiledWorkflow
from .registry import Registry
from .storage import Storage
from .types import EventKind


@dataclass(frozen=True)
class MigrationItem:
    """One case: where it is, where it would go, or why it cannot."""

    case_id: str
    from_version: str
    from_state: str
    to_state: str | None
    refused: str | None = None


@dataclass
class MigrationResult:
    """What a migration did (or, as a dry run, would do): one item per open case on
    another version; ``moved`` and ``refused`` split them."""

    workflow: str
    to_version: str
    dry_run: bool
    items: list[MigrationItem] = field(default_factory=list)

    @property
    def moved(self) -> list[MigrationItem]:
        return [i for i in self.items if i.refused is None]

    @property
    def refused(self) -> list[MigrationItem]:
        return [i for i in self.items if i.refused is not None]


def _target_state(new: CompiledWorkflow, state: str,
                  mapping: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The leaf a case in ``state`` goes to, or why there is none."""
    if state in mapping:
        dest = mapping[state]
        if dest not in new.tree:
            return None, f"the mapping sends {state!r} to {dest!r}, which the new version does not have"
        leaf = new.tree.entry_leaf(dest)
        return (leaf, None) if leaf else (None, f"{dest!r} has no initial state to enter")
    if state in new.tree and not new.tree.children.get(state):
        return state, None
    return None, f"state {state!r} has no mapping and does not exist in the new version"


class Migrator:
    """Moves running cases between versions of their workflow."""

    def __init__(self, storage: Storage, registry: Registry, clock: Clock) -> None:
        self._storage = storage
        self._registry = registry
        self._clock = clock

    def migrate(self, workflow: str, to_version: str, mapping: Mapping[str, str], *,
                dry_run: bool = True, actor: str = "operator") -> MigrationResult:
        """Plan (``dry_run``) or carry out the move of ``workflow``'s open cases to
        ``to_version`` (a stored version, or ``"latest"``: the loaded definition)."""
        if to_version == "latest":
            to_version = self._registry.get(workflow).version
        new = self._registry.get(workflow, to_version)
        for old_state, dest in mapping.items():
            if dest not in new.tree:
                raise InvalidQuery(f"mapping {old_state}={dest}: version {to_version} has no "
                                   f"state {dest!r}")
        result = MigrationResult(workflow, to_version, dry_run)
        with self._storage.read() as rtx:
            cases = rtx.open_cases_not_on(workflow, to_version)
        for case_id, version, state in cases:
            target, why = _target_state(new, state, mapping)
            if target is None or dry_run:
                result.items.append(MigrationItem(case_id, version, state, target, why))
                continue
            result.items.append(self._move(new, case_id, version, state, target, actor))
        return result

    def _move(self, new: CompiledWorkflow, case_id: str, version: str, state: str,
              dest: str, actor: str) -> MigrationItem:
        now = self._clock.now()
        with self._storage.write() as tx:
            rec = tx.lock_case(case_id)
            if rec is None or rec.version != version or rec.state != state or rec.final:
                return MigrationItem(case_id, version, state, dest,
                                     "the case changed while the migration ran; run it again")
            clocks, plan = new.timing.adopt(rec.clocks, case_id=rec.id, state=dest, now=now)
            old_row = rec.row_version
            rec.version, rec.state, rec.clocks = new.version, dest, clocks
            rec.final = new.is_final(dest)
            if rec.final:
                rec.closed_at = to_db(now)
            rec.row_version += 1
            rec.updated_at = to_db(now)
            ev = tx.chain_event(rec, kind=EventKind.MIGRATION.value, name="migrate",
                                from_state=state, to_state=dest, actor=actor, role="operator",
                                at=to_db(now), changes={},
                                details={"from_version": version, "to_version": new.version,
                                         "timers": len(plan.insert), **plan.notes},
                                idempotency_key=None)
            tx.update_case(rec, old_row)
            tx.cancel_all_timers(rec.id)
            for t in plan.insert:
                t.due_at = to_db(t.due_at)
            tx.insert_timers(plan.insert, to_db(now))
            tx.insert_event(ev)
        return MigrationItem(case_id, version, state, dest)
