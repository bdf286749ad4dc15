"""Finding cases: search with filters and keyset pages, and worklists.

:meth:`Search.cases` filters by workflow, state (a compound state stands for all its
children), lead unit, assignee, source and the fields a definition declares searchable,
by when cases were opened or updated and when their next deadline falls, and by being
overdue, at risk or escalated; it sorts by next deadline (the default: most urgent
first), opened or updated, and pages with a cursor (never OFFSET). Personal fields are
never searched by value: a petitioner's other cases are found through the keyed identity
of one of their cases.

:meth:`Search.worklist` lists the cases on which an actor can act now (by the same rules
module that decides a command), most urgent first, each with the steps it allows.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from . import rules
from .assignment import unit_key
from .clock import Clock, from_db, to_db
from .errors import CaseworkError, InvalidQuery
from .machine import CompiledWorkflow
from .persistence import CaseRecord
from .persistence import search as store_search
from .persistence.sql import FAR_DT
from .registry import Registry
from .storage import Storage
from .types import MASK, Actor, TriggerOption, _json

MAX_PAGE = 500
SCAN = 2_000  # candidate cases a worklist page looks at before it hands back a cursor


@dataclass(frozen=True, slots=True)
class CaseSummary:
    """A case as a list shows it.

    Attributes:
        id, workflow, version, state: which case, and where it is.
        summary: the fields the definition lists in ``summary`` (personal ones masked).
        next_deadline, next_due_at: its next deadline and when it falls (None: none runs).
        escalation_level, at_risk, overdue_since, final: its flags.
        opened_at, updated_at: aware UTC instants.
        options: in a worklist, what the actor may do on it now.
    """

    id: str
    workflow: str
    version: str
    state: str
    summary: Mapping[str, Any]
    next_deadline: str | None
    next_due_at: datetime | None
    escalation_level: int
    at_risk: bool
    overdue_since: datetime | None
    final: bool
    opened_at: datetime
    updated_at: datetime
    options: tuple[TriggerOption, ...] = ()

    @property
    def overdue(self) -> bool:
        return self.overdue_since is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        out = {f: _json(getattr(self, f)) for f in self.__dataclass_fields__}
        out["overdue"] = self.overdue
        out["options"] = [o.to_dict() for o in self.options]
        return out


@dataclass(frozen=True, slots=True)
class CasePage:
    """One page of a search or worklist: its cases, the cursor of the next page (None: the
    last page) and, when asked for, how many cases match in all."""

    items: tuple[CaseSummary, ...]
    cursor: str | None = None
    total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"items": [c.to_dict() for c in self.items], "cursor": self.cursor,
                "total": self.total}


def _encode(sort: str, key: Any, cid: str) -> str:
    raw = orjson.dumps([sort, key.isoformat() if isinstance(key, datetime) else key, cid])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        pad = "=" * (-len(cursor) % 4)
        got = orjson.loads(base64.urlsafe_b64decode(cursor + pad))
        cur_sort, key, cid = got
        if cur_sort != sort or not isinstance(cid, str) or not isinstance(key, str):
            raise ValueError
        return datetime.fromisoformat(key), cid
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidQuery("cursor: not a cursor of this search (take it from the page "
                           "before, with the same sort)") from None


def _instant(v: datetime | str | None, what: str) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            raise InvalidQuery(f"{what}: {v!r} is not an ISO date or time") from None
    if not isinstance(v, datetime):
        raise InvalidQuery(f"{what}: a datetime")
    return to_db(v if v.tzinfo is not None else v.replace(tzinfo=UTC))


class Search:
    """Search and worklists over the stored cases."""

    def __init__(self, storage: Storage, registry: Registry, clock: Clock) -> None:
        self._storage = storage
        self._registry = registry
        self._clock = clock

    # -- search ------------------------------------------------------------
    def cases(self, *, workflow: str | None = None, state: str | Iterable[str] | None = None,
              unit: str | None = None, assignee: str | None = None, source: str | None = None,
              opened_after: datetime | str | None = None,
              opened_before: datetime | str | None = None,
              updated_after: datetime | str | None = None,
              updated_before: datetime | str | None = None,
              due_after: datetime | str | None = None, due_before: datetime | str | None = None,
              overdue: bool | None = None, at_risk: bool | None = None,
              min_escalation: int | None = None, fields: Mapping[str, Any] | None = None,
              same_petitioner_as: str | None = None, include_closed: bool = False,
              sort: str = "due", cursor: str | None = None, limit: int = 50,
              count: bool = False) -> CasePage:
        wf = self._registry.get(workflow) if workflow is not None else None
        if sort not in store_search.SORTS:
            raise InvalidQuery(f"sort: one of {', '.join(store_search.SORTS)}, not {sort!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
            raise InvalidQuery(f"limit: a whole number from 1 to {MAX_PAGE}")
        if min_escalation is not None and (not isinstance(min_escalation, int)
                                           or isinstance(min_escalation, bool)
                                           or not 0 <= min_escalation <= 100):
            raise InvalidQuery("min_escalation: a whole number from 0 to 100")
        wanted = dict(fields or {})
        if source is not None:
            wanted["source"] = source
        party = None
        if same_petitioner_as is not None:
            party = self._party_of(same_petitioner_as)
        filters = store_search.Filters(
            workflow=workflow, states=self._states(wf, state), open_only=not include_closed,
            unit=_text(unit, "unit"), holders=_holders(assignee),
            opened=(_instant(opened_after, "opened_after"), _instant(opened_before, "opened_before")),
            updated=(_instant(updated_after, "updated_after"),
                     _instant(updated_before, "updated_before")),
            due=(_instant(due_after, "due_after"), _instant(due_before, "due_before")),
            overdue=overdue, at_risk=at_risk, min_escalation=min_escalation,
            fields=self._fields(wf, wanted), party_key=party)
        after = _decode(cursor, sort) if cursor else None
        with self._storage.errors():
            recs = store_search.page(self._storage.store, filters, sort=sort, after=after,
                                     limit=limit + 1, clocks=False)  # a summary shows none
            total = store_search.count(self._storage.store, filters) if count else None
        more = len(recs) > limit
        recs = recs[:limit]
        nxt = None
        if more:
            last = recs[-1]
            nxt = _encode(sort, store_search.sort_key(last, sort, FAR_DT), last.id)
        return CasePage(tuple(self._summary(r) for r in recs), nxt, total)

    def _states(self, wf: CompiledWorkflow | None,
                state: str | Iterable[str] | None) -> list[str] | None:
        if state is None:
            return None
        names = [state] if isinstance(state, str) else list(state)
        workflows = [wf] if wf is not None else self._registry.latest()
        leaves: list[str] = []
        for name in names:
            found = [w for w in workflows if name in w.tree]
            if not found:
                raise InvalidQuery(f"state: no state {name!r}"
                                   + (f" in workflow {wf.name!r}" if wf is not None else ""))
            for w in found:
                leaves.extend(w.tree.leaves_under(name))
        return sorted(set(leaves))

    def _fields(self, wf: CompiledWorkflow | None, wanted: Mapping[str, Any]) -> dict[str, Any]:
        if not wanted:
            return {}
        workflows = [wf] if wf is not None else self._registry.latest()
        for key, value in wanted.items():
            declared = [w for w in workflows if key in w.spec.search]
            if not declared:
                pii = any(key in w.pii for w in workflows)
                raise InvalidQuery(f"{key}: personal data (pii) is never searched by value"
                                   if pii else f"{key}: not a field the definition lets a "
                                   f"search filter on (searchable: "
                                   f"{sorted({f for w in workflows for f in w.spec.search})})")
            for w in declared:
                check = value if isinstance(value, (list, tuple)) else [value]
                for v in check:
                    try:
                        w.validate({key: v})
                    except CaseworkError as e:
                        raise InvalidQuery(f"{key}: {e}") from None
        return dict(wanted)

    def _party_of(self, case_id: str) -> str:
        with self._storage.read() as tx:
            rec = tx.get_case(case_id)
        if rec is None:
            raise InvalidQuery(f"same_petitioner_as: no case {case_id!r}")
        if rec.party_key is None:
            raise InvalidQuery(f"same_petitioner_as: case {case_id} does not identify its "
                               "petitioner (no identity given)")
        return rec.party_key

    def _summary(self, r: CaseRecord, options: tuple[TriggerOption, ...] = ()) -> CaseSummary:
        try:
            wf = self._registry.get(r.workflow, r.version)
            keys, pii = wf.spec.summary, wf.pii
        except CaseworkError:
            keys, pii = (), frozenset()
        summary = {k: (MASK if k in pii and r.data.get(k) not in (None, "") else r.data.get(k))
                   for k in keys}
        return CaseSummary(
            r.id, r.workflow, r.version, r.state, summary, r.next_deadline,
            from_db(r.next_due_at) if r.next_due_at is not None else None, r.escalation_level,
            r.at_risk, from_db(r.overdue_since) if r.overdue_since else None, r.final,
            from_db(r.opened_at), from_db(r.updated_at), options)

    # -- worklists -----------------------------------------------------------
    def worklist(self, actor: Actor, *, of: str = "mine", units: Iterable[str] | None = None,
                 cursor: str | None = None, limit: int = 50) -> CasePage:
        """The cases ``actor`` can act on now (``of="mine"``), those of the actor's unit
        (``"unit"``: lead or assisting), or for a supervisor the overdue and escalated cases
        of ``units`` (``"supervised"``, every unit by default); most urgent first, each
        with what the actor may do on it now."""
        if of not in ("mine", "unit", "supervised"):
            raise InvalidQuery("of: mine, unit or supervised")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
            raise InvalidQuery(f"limit: a whole number from 1 to {MAX_PAGE}")
        if of == "unit" and not actor.unit:
            raise InvalidQuery(f"{actor.id} belongs to no unit: give the actor as "
                               "role:id@unit")
        key = _decode(cursor, "due") if cursor else None
        sources = self._sources(actor, of, units)
        now = self._clock.now()
        batch_size = limit  # one round when every case listed is actionable
        picked: list[CaseSummary] = []
        scanned = 0
        exhausted = False
        while len(picked) < limit and scanned < SCAN:
            batch = self._merged(sources, key, batch_size)
            for rec in batch:
                scanned += 1
                key = (store_search.sort_key(rec, "due", FAR_DT), rec.id)
                options = self._options(rec, actor, now)
                if of != "mine" or any(o.allowed for o in options):
                    picked.append(self._summary(rec, tuple(options)))
                    if len(picked) == limit:
                        break
            else:
                if len(batch) < batch_size:
                    exhausted = True
                    break
                continue
            break
        nxt = None if exhausted or key is None else _encode("due", key[0], key[1])
        return CasePage(tuple(picked), nxt)

    def _sources(self, actor: Actor, of: str,
                 units: Iterable[str] | None) -> list[store_search.Filters]:
        if of == "supervised":
            chosen = list(units) if units is not None else [None]
            return [store_search.Filters(unit=u, overdue=True) for u in chosen] + [
                store_search.Filters(unit=u, min_escalation=1) for u in chosen]
        holders = [actor.id] + ([unit_key(actor.unit)] if actor.unit else [])
        out = [store_search.Filters(holders=holders)]
        if actor.unit:
            out.append(store_search.Filters(unit=actor.unit))
        if of == "mine":
            for wf in self._registry.latest():
                states = _open_to(wf, actor)
                if states:
                    out.append(store_search.Filters(workflow=wf.name, states=sorted(states)))
        return out

    def _merged(self, sources: list[store_search.Filters], after: tuple[Any, str] | None,
                n: int) -> list[CaseRecord]:
        """The next ``n`` cases of all sources together, in due order, each once."""
        seen: dict[str, CaseRecord] = {}
        with self._storage.errors():
            for f in sources:
                for rec in store_search.page(self._storage.store, f, sort="due", after=after,
                                             limit=n):
                    seen[rec.id] = rec
        ordered = sorted(seen.values(),
                         key=lambda r: (store_search.sort_key(r, "due", FAR_DT), r.id))
        return ordered[:n]

    def _options(self, rec: CaseRecord, actor: Actor, now: datetime) -> list[TriggerOption]:
        try:
            wf = self._registry.get(rec.workflow, rec.version)
        except CaseworkError:
            return []
        return rules.options(wf, rec.id, rec.state, rec.data, actor, now, rec.clocks)


def _holders(assignee: str | None) -> list[str] | None:
    who = _text(assignee, "assignee")
    return None if who is None else [who]


def _text(v: str | None, what: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > 128 or "\x00" in v:
        raise InvalidQuery(f"{what}: text of 1 to 128 characters")
    return v


def _open_to(wf: CompiledWorkflow, actor: Actor) -> set[str]:
    """The states in which a step of ``wf`` is open to ``actor`` by role alone (no scope
    that ties it to the case, or a scope the actor's role satisfies)."""
    out: set[str] = set()

    def open_to(roles: frozenset[str], scope: tuple[str, ...]) -> bool:
        if roles and not (roles & actor.roles):
            return False
        return not scope or any(s.startswith("role:") and s[5:] in actor.roles for s in scope)

    for ct in wf.transitions:
        if open_to(ct.roles, ct.spec.scope):
            for s in ct.spec.source:
                out.update(wf.tree.leaves_under(s))
    for a in wf.activities.values():
        if open_to(a.roles, a.spec.scope):
            out.update(a.leaves)
    return out - set(wf.finals)
