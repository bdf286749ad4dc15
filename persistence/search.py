"""Case search at the storage level: filters, keyset pages, counts.

Every page is a keyset page: the rows after a key (the sort column and the case id of the
last row of the page before), never an OFFSET, so a page costs the same wherever it is and
a case that keeps its key is listed once however the others move. Open cases are found by
their next deadline through the partial indexes ``ix_cases_open_due`` and
``ix_cases_unit_due``; who holds a case through ``ix_assignments_who``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, text, tuple_

from . import models
from .records import CaseRecord
from .sql import CASE_COLS
from .store import Store

C = models.cases
A = models.assignments

SORTS = {"due": (C.c.next_due_at, False), "opened": (C.c.opened_at, True),
         "updated": (C.c.updated_at, True)}


@dataclass(frozen=True)
class Filters:
    """What a search keeps (every filter given must hold)."""

    workflow: str | None = None
    states: Sequence[str] | None = None
    open_only: bool = True
    unit: str | None = None
    holders: Sequence[str] | None = None      # cases any of these hold (ids, or @unit)
    opened: tuple[datetime | None, datetime | None] = (None, None)
    updated: tuple[datetime | None, datetime | None] = (None, None)
    due: tuple[datetime | None, datetime | None] = (None, None)
    overdue: bool | None = None
    at_risk: bool | None = None
    min_escalation: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    party_key: str | None = None
    ids: Sequence[str] | None = None


def _where(store: Store, f: Filters) -> list[Any]:
    conds: list[Any] = []
    if f.workflow is not None:
        conds.append(C.c.workflow == f.workflow)
    if f.open_only:
        # Written as the partial indexes' own condition, so the planner uses them.
        conds.append(text("final = 0") if store.backend == "sqlite" else text("NOT final"))
    if f.states is not None:
        conds.append(C.c.state.in_(list(f.states)))
    if f.unit is not None:
        conds.append(C.c.unit == f.unit)
    if f.holders is not None:
        conds.append(exists().where(A.c.case_id == C.c.id, A.c.who.in_(list(f.holders))))
    for col, (lo, hi) in ((C.c.opened_at, f.opened), (C.c.updated_at, f.updated),
                          (C.c.next_due_at, f.due)):
        if lo is not None:
            conds.append(col >= lo)
        if hi is not None:
            conds.append(col < hi)
    if f.overdue is not None:
        conds.append(C.c.overdue_since.is_not(None) if f.overdue else C.c.overdue_since.is_(None))
    if f.at_risk is not None:
        conds.append(C.c.at_risk.is_(f.at_risk))
    if f.min_escalation is not None:
        conds.append(C.c.escalation_level >= f.min_escalation)
    for key, value in f.fields.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        conds.append(or_(*[store.dialect.json_equals(C.c.data, key, v) for v in values]))
    if f.party_key is not None:
        conds.append(C.c.party_key == f.party_key)
    if f.ids is not None:
        conds.append(C.c.id.in_(list(f.ids)))
    return conds


def page(store: Store, f: Filters, *, sort: str = "due", after: tuple[Any, str] | None = None,
         limit: int = 50) -> list[CaseRecord]:
    """Up to ``limit`` cases matching ``f`` in ``sort`` order, after the key ``after``."""
    col, descending = SORTS[sort]
    conds = _where(store, f)
    if after is not None:
        key, cid = after
        conds.append(tuple_(col, C.c.id) < tuple_(key, cid) if descending
                     else tuple_(col, C.c.id) > tuple_(key, cid))
    order = (col.desc(), C.c.id.desc()) if descending else (col, C.c.id)
    stmt = select(*CASE_COLS).where(and_(*conds)).order_by(*order).limit(limit)
    with store.read() as tx:
        return [tx.record(r) for r in _rows(tx, stmt, store)]


def count(store: Store, f: Filters) -> int:
    stmt = select(func.count()).select_from(C).where(and_(*_where(store, f)))
    with store.read() as tx:
        return int(_rows(tx, stmt, store)[0][0])


def sort_key(rec: CaseRecord, sort: str, far: datetime) -> Any:
    """The value a case sorts by (``far`` for a case with no next deadline)."""
    if sort == "due":
        return rec.next_due_at if rec.next_due_at is not None else far
    return rec.opened_at if sort == "opened" else rec.updated_at


def _rows(tx: Any, stmt: Any, store: Store) -> list[Any]:
    compiled = stmt.compile(dialect=store.engine.dialect,
                            compile_kwargs={"render_postcompile": True})
    params = compiled.params
    sql = str(compiled)
    if compiled.positiontup is not None:
        args: Any = tuple(_bind(store, params[k]) for k in compiled.positiontup)
    else:
        args = {k: _bind(store, v) for k, v in params.items()}
    tx.cur.execute(sql, args)
    return list(tx.cur.fetchall())


def _bind(store: Store, v: Any) -> Any:
    if isinstance(v, datetime):
        return store.dialect.datetime_in(v)
    return v
