"""Moving running cases to another version of their workflow.

A migration may only put a case where the new version's rules could have brought it:

* never into a final state (a case is closed only by the step that closes it, such as
  the archive that needs a satisfied petitioner);
* into another state than the one it is in only when its data meets what the new
  definition asks of a case arriving there: the required fields and the guard of at least
  one transition into that state (or, for the initial state, what opening requires);
* a state with no mapping, absent from the new version, is refused.

An operator may override the second rule (not the first) with a reason and the name of
who approved it; both are recorded in the migration event. The dry run lists every case
it would move and every case it would refuse, with why; the real run moves each case in
its own transaction, records a ``migration`` event and reschedules the case's timers
under the new definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .assignment import Keeper
from .clock import Clock, to_db
from .errors import CommandRefused, InvalidQuery
from .machine import CompiledWorkflow
from .registry import Registry
from .rules import Attempt, guard_names
from .storage import Storage
from .types import Actor, EventKind, GuardContext


@dataclass(frozen=True)
class MigrationItem:
    """One case: where it is, where it would go, or why it cannot."""

    case_id: str
    from_version: str
    from_state: str
    to_state: str | None
    refused: str | None = None
    overridden: str | None = None  # the rule an approved override set aside


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


@dataclass(frozen=True)
class Override:
    """An operator's approval to move cases into states whose entry rules their data
    does not meet (never into a final state)."""

    reason: str
    approved_by: str


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


def entry_refusal(new: CompiledWorkflow, target: str, data: Mapping[str, Any], case_id: str,
                  state: str, now: datetime) -> str | None:
    """Why a case holding ``data`` could not have arrived in ``target`` under ``new``'s
    rules (the required fields and guard of every transition into it refuse), or None."""
    if target == new.initial:
        missing = [f for f in new.spec.open.required if data.get(f) in (None, "", [])]
        return (f"a case enters {target!r} when opened, with {', '.join(missing)}, which this "
                f"case lacks") if missing else None
    into = [ct for ct in new.transitions if new.tree.entry_leaf(ct.spec.dest) == target]
    if not into:
        return f"no transition of the new version leads into {target!r}"
    why: list[str] = []
    for ct in into:
        actor = Actor("migration", ct.roles)
        names = guard_names(new, data, {}, actor, now, state)
        attempt = Attempt(actor, data, names)
        ctx = GuardContext(case_id, new.name, state, data, {}, actor, now)
        if attempt.admit(ct, lambda: ctx):  # noqa: B023 - called before the loop moves on
            return None
        e: CommandRefused = attempt.best_refusal()
        why.append(f"{ct.spec.trigger!r} ({e.reason})")
    return f"its data does not meet what a case entering {target!r} needs: " + "; ".join(why)


class Migrator:
    """Moves running cases between versions of their workflow."""

    def __init__(self, storage: Storage, registry: Registry, clock: Clock) -> None:
        self._storage = storage
        self._registry = registry
        self._clock = clock

    def migrate(self, workflow: str, to_version: str, mapping: Mapping[str, str], *,
                dry_run: bool = True, actor: str = "operator",
                override: Override | None = None) -> MigrationResult:
        """Plan (``dry_run``) or carry out the move of ``workflow``'s open cases to
        ``to_version`` (a stored version, or ``"latest"``: the loaded definition)."""
        if to_version == "latest":
            to_version = self._registry.get(workflow).version
        new = self._registry.get(workflow, to_version)
        for old_state, dest in mapping.items():
            if dest not in new.tree:
                raise InvalidQuery(f"mapping {old_state}={dest}: version {to_version} has no "
                                   f"state {dest!r}")
        if override is not None and not (override.reason.strip() and override.approved_by.strip()):
            raise InvalidQuery("an override needs a reason and who approved it")
        result = MigrationResult(workflow, to_version, dry_run)
        with self._storage.read() as rtx:
            cases = rtx.open_cases_not_on(workflow, to_version)
        now = self._clock.now()
        for case_id, version, state in cases:
            item = self._plan(new, case_id, version, state, mapping, now, override)
            if item.refused is None and not dry_run:
                item = self._move(new, item, actor, override)
            result.items.append(item)
        return result

    def _plan(self, new: CompiledWorkflow, case_id: str, version: str, state: str,
              mapping: Mapping[str, str], now: datetime,
              override: Override | None) -> MigrationItem:
        target, why = _target_state(new, state, mapping)
        if target is None:
            return MigrationItem(case_id, version, state, None, why)
        if new.is_final(target):
            return MigrationItem(case_id, version, state, target,
                                 f"{target!r} is a final state: a migration never closes a "
                                 "case (only the step that closes it may)")
        if target == state:
            return MigrationItem(case_id, version, state, target)
        with self._storage.read() as tx:
            rec = tx.get_case(case_id)
        data = rec.data if rec is not None else {}
        refusal = entry_refusal(new, target, data, case_id, state, now)
        if refusal is None:
            return MigrationItem(case_id, version, state, target)
        if override is not None:
            return MigrationItem(case_id, version, state, target, overridden=refusal)
        return MigrationItem(case_id, version, state, target, refusal)

    def _move(self, new: CompiledWorkflow, item: MigrationItem, actor: str,
              override: Override | None) -> MigrationItem:
        now = self._clock.now()
        dest = item.to_state
        assert dest is not None
        with self._storage.write() as tx:
            rec = tx.lock_case(item.case_id)
            if (rec is None or rec.version != item.from_version or rec.state != item.from_state
                    or rec.final):
                return MigrationItem(item.case_id, item.from_version, item.from_state, dest,
                                     "the case changed while the migration ran; run it again")
            # The entry rules are judged again on the row as locked (the plan read it earlier).
            refusal = None if dest == rec.state else entry_refusal(new, dest, rec.data, rec.id,
                                                                   rec.state, now)
            if refusal is not None and override is None:
                return MigrationItem(item.case_id, item.from_version, item.from_state, dest,
                                     refusal)
            keeper = Keeper(new.spec, rec)
            clocks, plan = new.timing.adopt(rec.clocks, case_id=rec.id, state=dest, now=now)
            old_row = rec.row_version
            state = rec.state
            rec.version, rec.state, rec.clocks = new.version, dest, clocks
            rec.final = False
            rec.row_version += 1
            rec.updated_at = to_db(now)
            details: dict[str, Any] = {"from_version": item.from_version,
                                       "to_version": new.version, "timers": len(plan.insert),
                                       **plan.notes}
            if refusal is not None and override is not None:
                details["override"] = {"reason": override.reason,
                                       "approved_by": override.approved_by, "rule": refusal}
            ev = tx.chain_event(rec, kind=EventKind.MIGRATION.value, name="migrate",
                                from_state=state, to_state=dest, actor=actor, role="operator",
                                at=to_db(now), changes={}, details=details,
                                idempotency_key=None)
            keeper.derive(rec)
            tx.update_case(rec, old_row)
            keeper.store(tx, rec)
            tx.cancel_all_timers(rec.id)
            for t in plan.insert:
                t.due_at = to_db(t.due_at)
            tx.insert_timers(plan.insert, to_db(now))
            tx.insert_event(ev)
        return MigrationItem(item.case_id, item.from_version, item.from_state, dest,
                             overridden=refusal)
