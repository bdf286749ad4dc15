"""Who holds a case (包案到人): assignment slots, stand-ins, scopes, and what is kept for search.

A definition's ``assignment.slots`` name the people and units a case is assigned to
(its leader, handler, lead unit, assisting units, first handler), each kept in a case
field. A stand-in (代辦) holds a person's slot for a period and loses it by itself when
the period ends. A step's ``scope`` says who of the case may take it; :func:`in_scope`
decides, for the rules, for available triggers and for worklists alike.

With every write the engine keeps, on the case row, its lead unit and its next deadline
(:func:`derive`), and in the ``assignments`` table who holds it (:func:`holders`), so
search and worklists are index lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .clock import to_db
from .definition import SlotKind, WorkflowSpec
from .persistence import CaseRecord
from .persistence.tx import WriteTx
from .types import Actor

DELEGATIONS = "_delegations"  # where a case's stand-ins are kept among its clocks
Holder = tuple[str, str, str, datetime | None]  # slot, who, kind, until


@dataclass(frozen=True)
class Slot:
    name: str
    field: str
    kind: SlotKind
    lead: bool


def slots_of(spec: WorkflowSpec) -> dict[str, Slot]:
    return {n: Slot(n, s.field or n, s.kind, s.lead) for n, s in spec.assignment.slots.items()}


def unit_key(unit: str) -> str:
    """How a unit appears among the holders of a case (people appear by their id)."""
    return f"@{unit}"


def active_delegations(clocks: Mapping[str, Any], now: datetime) -> dict[str, dict[str, Any]]:
    """The stand-ins of a case whose period has not ended, by slot."""
    found = clocks.get(DELEGATIONS) or {}
    return {slot: d for slot, d in found.items()
            if datetime.fromisoformat(d["until"]) > now}


def holders(slots: Mapping[str, Slot], data: Mapping[str, Any],
            clocks: Mapping[str, Any]) -> list[Holder]:
    """Everyone holding the case: each slot's person or units, and the stand-ins."""
    out: list[Holder] = []
    for s in slots.values():
        v = data.get(s.field)
        if v in (None, "", []):
            continue
        if s.kind is SlotKind.PERSON:
            out.append((s.name, str(v), "person", None))
        elif s.kind is SlotKind.UNIT:
            out.append((s.name, unit_key(str(v)), "unit", None))
        else:
            for u in dict.fromkeys(v if isinstance(v, list) else [v]):
                out.append((s.name, unit_key(str(u)), "unit", None))
    for slot, d in (clocks.get(DELEGATIONS) or {}).items():
        out.append((slot, str(d["to"]), "stand_in", to_db(datetime.fromisoformat(d["until"]))))
    return sorted(set(out), key=lambda h: (h[0], h[1], h[2]))


def derive(slots: Mapping[str, Slot], rec: CaseRecord) -> None:
    """Set the row's lead unit and next deadline from its data and clocks."""
    lead = next((s for s in slots.values() if s.lead), None)
    rec.unit = str(rec.data[lead.field]) if lead is not None and rec.data.get(lead.field) else None
    nxt: tuple[datetime, str] | None = None
    if not rec.final:
        for name, c in rec.clocks.items():
            if name.startswith("_") or not isinstance(c, dict) or c.get("status") != "running":
                continue
            due = c.get("due")  # an overdue clock keeps its (past) due: most urgent first
            if due:
                at = to_db(datetime.fromisoformat(due))
                if nxt is None or at < nxt[0]:
                    nxt = (at, name)
    rec.next_due_at, rec.next_deadline = (nxt if nxt is not None else (None, None))


class Keeper:
    """Keeps a case's derived columns and holders in step with a write in one transaction:
    take the holders before the change, then :meth:`keep` after it."""

    def __init__(self, spec: WorkflowSpec, rec: CaseRecord | None) -> None:
        self.slots = slots_of(spec)
        self.before = holders(self.slots, rec.data, rec.clocks) if rec is not None else []

    def derive(self, rec: CaseRecord) -> None:
        """The row's lead unit and next deadline (before the row is written)."""
        derive(self.slots, rec)

    def store(self, tx: WriteTx, rec: CaseRecord) -> None:
        """Who holds the case, if that changed (after the row is written)."""
        after = holders(self.slots, rec.data, rec.clocks)
        if after != self.before:
            tx.set_assignments(rec.id, after)
            self.before = after


# -- scopes ----------------------------------------------------------------------------
def in_scope(scope: Iterable[str], slots: Mapping[str, Slot], data: Mapping[str, Any],
             clocks: Mapping[str, Any], actor: Actor, now: datetime) -> bool:
    """Whether ``actor`` is one of whom ``scope`` admits on this case."""
    delegated = active_delegations(clocks, now)
    for item in scope:
        if item.startswith("role:"):
            if item[5:] in actor.roles:
                return True
        elif item == "unit":
            lead = next((s for s in slots.values() if s.lead), None)
            if lead is not None and actor.unit and data.get(lead.field) == actor.unit:
                return True
        elif item == "assisting":
            for s in slots.values():
                units = data.get(s.field) if s.kind is SlotKind.UNITS else None
                if actor.unit and isinstance(units, list) and actor.unit in units:
                    return True
        else:
            named = slots.get(item)
            if named is None:
                continue
            s = named
            if s.kind is SlotKind.PERSON and data.get(s.field) == actor.id:
                return True
            if s.kind is SlotKind.UNIT and actor.unit and data.get(s.field) == actor.unit:
                return True
            stand_in = delegated.get(item)
            if stand_in is not None and stand_in.get("to") == actor.id:
                return True
    return False


def describe_scope(scope: Iterable[str], slots: Mapping[str, Slot],
                   data: Mapping[str, Any]) -> str:
    """Whom a scope admits on this case, in words (for a refusal)."""
    parts = []
    for item in scope:
        if item.startswith("role:"):
            parts.append(f"any {item[5:]}")
        elif item == "unit":
            lead = next((s for s in slots.values() if s.lead), None)
            parts.append(f"the lead unit ({data.get(lead.field) if lead else None})")
        elif item == "assisting":
            parts.append("an assisting unit")
        else:
            s = slots.get(item)
            holder = data.get(s.field) if s is not None else None
            parts.append(f"the case's {item} ({holder or 'not assigned'}) or their stand-in")
    return " or ".join(parts)
