"""A stored history replayed against the rules, for cases that arrive from elsewhere.

A ledger's chain proves its events were not changed after they were keyed; replay proves
they could have happened: every event is checked against the workflow version the case
ran on at that point, over the data folded from the events before it:

* the first event opens the case in the version's initial state, carrying only what
  opening may carry;
* a transition is one the version allows from the state the case was in, to the state
  it records, for the role it records, with its required fields and its guard true;
* an activity is allowed in that state for that role, its guard true, and moves nothing;
* a timer's event (warning, escalation, breach, cycle, check, deadline) and a delegation
  move nothing and change no field; an assignment changes only its slot's field, by a role
  that may assign;
* a migration moves to the version it names, never into a final state, and into another
  state only if the data met that state's entry rules or an approved override is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from .errors import CaseworkError
from .machine import CompiledWorkflow
from .migration import entry_refusal
from .rules import Attempt, guard_names
from .types import Actor, EventKind, GuardContext

_SYSTEM = {EventKind.WARNING, EventKind.ESCALATION, EventKind.BREACH, EventKind.CYCLE,
           EventKind.CHECK, EventKind.DEADLINE}

WorkflowOf = Callable[[str, str], CompiledWorkflow | None]


def _json(v: Any) -> dict[str, Any]:
    out = orjson.loads(v) if isinstance(v, (str, bytes)) else v
    return out if isinstance(out, dict) else {}


def _aware(at: Any) -> datetime:
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def replay_problems(row: Mapping[str, Any], events: Sequence[Mapping[str, Any]],
                    workflow_of: WorkflowOf) -> list[str]:
    """Every event of one case that its workflow's rules could not have produced."""
    cid = row["id"]
    name = row["workflow"]
    problems: list[str] = []
    if not events:
        return problems
    first = events[0]
    version = _first_version(row, events)
    wf = workflow_of(name, version)
    if wf is None:
        return [f"case {cid}: workflow {name} version {version} is neither in the file nor "
                "in the target database: its history cannot be checked"]
    data: dict[str, Any] = {}
    state: str | None = None
    for e in events:
        where = f"case {cid}, event {e['seq']} ({e['kind']} {e['name']!r})"
        changes = _json(e["changes"])
        details = _json(e["details"])
        kind = e["kind"]
        try:
            if e is first:
                why = _open(wf, e, changes)
            elif kind == EventKind.MIGRATION:
                target = workflow_of(name, str(details.get("to_version", "")))
                why, wf = _migration(wf, target, e, state, data, details)
            elif kind == EventKind.TRANSITION:
                why = _transition(wf, e, state, data, changes)
            elif kind == EventKind.ACTIVITY:
                why = _activity(wf, e, state, data, changes, details)
            elif kind == EventKind.ASSIGNMENT:
                why = _assignment(wf, e, state, changes, details)
            elif kind == EventKind.DELEGATION:
                why = None if e["from_state"] == e["to_state"] == state and not changes else (
                    "a delegation may neither move the case nor change its fields")
            elif kind in _SYSTEM:
                why = None if e["from_state"] == e["to_state"] == state and not changes else (
                    "a timer's event may neither move the case nor change its fields")
            else:
                why = f"unknown event kind {kind!r}"
        except CaseworkError as err:
            why = str(err)
        if why is not None:
            problems.append(f"{where}: {why}")
            return problems  # what follows rests on a step that could not have happened
        data.update(changes)
        state = e["to_state"] or state
    return problems


def _first_version(row: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> str:
    """The version the case was opened under: the first migration's origin, or the row's."""
    for e in events:
        if e["kind"] == EventKind.MIGRATION:
            v = _json(e["details"]).get("from_version")
            if isinstance(v, str):
                return v
    return str(row["version"])


def _actor(e: Mapping[str, Any]) -> Actor:
    role = e["role"]
    return Actor(e["actor"] or "-", frozenset({role}) if role else frozenset())


def _open(wf: CompiledWorkflow, e: Mapping[str, Any], changes: dict[str, Any]) -> str | None:
    if e["kind"] != EventKind.OPEN or e["from_state"] is not None:
        return "a history must start with the event that opened the case"
    if e["to_state"] != wf.initial:
        return f"the case was opened in {e['to_state']!r}, not in the initial state {wf.initial!r}"
    if wf.open_roles and e["role"] not in wf.open_roles:
        return f"opened with the role {e['role']!r}; opening needs one of {sorted(wf.open_roles)}"
    allowed = wf.open_inputs | frozenset(wf.spec.open.set)
    foreign = sorted(set(changes) - allowed)
    if foreign:
        return f"opened carrying {', '.join(foreign)}, which opening may not bring"
    missing = [f for f in wf.spec.open.required if changes.get(f) in (None, "", [])]
    if missing:
        return f"opened without {', '.join(missing)}"
    return None


def _transition(wf: CompiledWorkflow, e: Mapping[str, Any], state: str | None,
                data: dict[str, Any], changes: dict[str, Any]) -> str | None:
    if e["from_state"] != state:
        return f"it starts from {e['from_state']!r}, but the case was in {state!r}"
    assert state is not None
    candidates = [(ct, dest) for ct, dest in wf.candidates(state, e["name"])
                  if dest == e["to_state"]]
    if not candidates:
        return f"{e['name']!r} does not lead from {state!r} to {e['to_state']!r}"
    actor = _actor(e)
    at = _aware(e["at"])
    why = []
    for ct, _ in candidates:
        inputs = set(ct.spec.required) | set(ct.spec.optional)
        written = set(changes) - inputs - set(ct.sets)
        if written and not ct.actions:
            why.append(f"it set {', '.join(sorted(written))}, which {e['name']!r} does not")
            continue
        given = {k: v for k, v in changes.items() if k in inputs}
        names = guard_names(wf, data, given, actor, at, state)
        attempt = Attempt(actor, given, names)
        ctx = GuardContext(e["case_id"], wf.name, state, data, given, actor, at)
        if attempt.admit(ct, lambda: ctx):  # noqa: B023 - called before the loop moves on
            return None
        refusal = attempt.best_refusal()
        why.append(f"[{refusal.rule}] {refusal.reason}")
    return "the rules refuse it: " + "; ".join(why)


def _activity(wf: CompiledWorkflow, e: Mapping[str, Any], state: str | None, data: dict[str, Any],
              changes: dict[str, Any], details: dict[str, Any]) -> str | None:
    a = wf.activities.get(e["name"])
    if a is None:
        return f"the workflow has no activity {e['name']!r}"
    if e["from_state"] != state or e["to_state"] != state:
        return "an activity does not move the case"
    if state not in a.leaves:
        return f"{e['name']!r} is not allowed in {state!r}"
    if a.roles and e["role"] not in a.roles:
        return f"recorded with the role {e['role']!r}; it needs one of {sorted(a.roles)}"
    written = set(changes) - set(a.sets)
    if written:
        return f"it set {', '.join(sorted(written))}, which {e['name']!r} does not"
    if a.guard is not None:
        names = guard_names(wf, data, details, _actor(e), _aware(e["at"]), state)
        names.update(dict.fromkeys(a.spec.fields))
        names.update(details)
        try:
            ok = a.guard.evaluate(names)
        except ValueError:
            ok = False
        if not ok:
            return f"its guard `{a.guard.source}` is false"
    return None


def _assignment(wf: CompiledWorkflow, e: Mapping[str, Any], state: str | None,
                changes: dict[str, Any], details: dict[str, Any]) -> str | None:
    if e["from_state"] != state or e["to_state"] != state:
        return "an assignment does not move the case"
    slot = wf.slots.get(str(details.get("slot")))
    if slot is None:
        return f"the workflow has no assignment slot {details.get('slot')!r}"
    if set(changes) - {slot.field}:
        return f"it set {', '.join(sorted(set(changes) - {slot.field}))}, not its slot's field"
    allowed = set(wf.spec.assignment.roles)
    if allowed and e["role"] not in allowed:
        return f"assigned with the role {e['role']!r}; assigning needs one of {sorted(allowed)}"
    return None


def _migration(wf: CompiledWorkflow, target: CompiledWorkflow | None, e: Mapping[str, Any],
               state: str | None, data: dict[str, Any],
               details: dict[str, Any]) -> tuple[str | None, CompiledWorkflow]:
    if target is None:
        return f"it migrated to version {details.get('to_version')!r}, which is unknown", wf
    if e["from_state"] != state:
        return f"it starts from {e['from_state']!r}, but the case was in {state!r}", wf
    dest = e["to_state"]
    if dest not in target.tree or target.tree.children.get(dest):
        return f"version {target.version} has no state {dest!r} to migrate into", wf
    if target.is_final(dest):
        return f"a migration never moves a case into a final state ({dest!r})", wf
    if dest != state and not isinstance(details.get("override"), dict):
        assert state is not None
        why = entry_refusal(target, dest, data, e["case_id"], state, _aware(e["at"]))
        if why is not None:
            return why, wf
    return None, target
