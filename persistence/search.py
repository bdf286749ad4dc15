"""Case search at the storage level: filters, keyset pages, counts.

Every page is a keyset page: the rows after a key (the sort column and the case id of the
last row of the page before), never an OFFSET, so a page costs the same wherever it is and
a case that keeps its key is listed once however the others move. Open cases are found by
their next deadline through the partial indexes ``ix_cases_open_due`` and
``ix_cases_unit_due``; who holds a case through ``ix_assignments_who``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, func, literal_column, or_, select, text, true, tuple_

from . import models
from .records import CaseRecord
from .sql import CASE_COLS
from .store import Store

T = TypeVar("T")
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


Term = tuple[str, Any]  # a filter given: its name, and its value (a list: one bind each)
FLAGS = ("open", "overdue", "at_risk")  # written into the SQL, not bound


def _terms(f: Filters) -> list[Term]:
    """The filters ``f`` gives, in the order of the SQL's conditions."""
    terms: list[Term] = []

    def add(name: str, value: Any) -> None:
        if value is not None:
            terms.append((name, list(value) if isinstance(value, (list, tuple)) else value))

    add("workflow", f.workflow)
    if f.open_only:
        terms.append(("open", True))
    add("state", f.states)
    add("unit", f.unit)
    add("who", f.holders)
    for name, (lo, hi) in (("opened", f.opened), ("updated", f.updated), ("due", f.due)):
        add(f"{name}_lo", lo)
        add(f"{name}_hi", hi)
    add("overdue", f.overdue)
    add("at_risk", f.at_risk)
    add("min_escalation", f.min_escalation)
    for key, value in f.fields.items():
        terms.append((f"field:{key}", list(value) if isinstance(value, (list, tuple)) else [value]))
    add("party_key", f.party_key)
    add("id", f.ids)
    return terms


def _condition(store: Store, name: str, v: Any) -> Any:
    """The SQL condition of one term; ``v`` its bound value(s)."""
    if name == "open":
        # Written as the partial indexes' own condition, so the planner uses them.
        return text("final = 0") if store.backend == "sqlite" else text("NOT final")
    if name == "overdue":
        return C.c.overdue_since.is_not(None) if v else C.c.overdue_since.is_(None)
    if name == "at_risk":
        return C.c.at_risk.is_(v)
    if name.startswith("field:"):  # the dialect binds these values itself
        return or_(*[store.dialect.json_equals(C.c.data, name[6:], x) for x in v])
    if name == "who":
        # Selecting a column of ix_assignments_who, not *, so SQLite reads only the index.
        return select(A.c.case_id).where(A.c.case_id == C.c.id, A.c.who.in_(v)).exists()
    col, op = _COLUMNS[name]
    return col.in_(v) if op == "in" else col >= v if op == ">=" else col < v if op == "<" else col == v


_COLUMNS = {"workflow": (C.c.workflow, "=="), "state": (C.c.state, "in"), "unit": (C.c.unit, "=="),
            "opened_lo": (C.c.opened_at, ">="), "opened_hi": (C.c.opened_at, "<"),
            "updated_lo": (C.c.updated_at, ">="), "updated_hi": (C.c.updated_at, "<"),
            "due_lo": (C.c.next_due_at, ">="), "due_hi": (C.c.next_due_at, "<"),
            "min_escalation": (C.c.escalation_level, ">="), "party_key": (C.c.party_key, "=="),
            "id": (C.c.id, "in")}


def _shape(terms: Sequence[Term]) -> tuple[Any, ...]:
    """What the SQL of the terms depends on: which are given, how many values a list holds,
    the flags written into the SQL."""
    return tuple((n, v if n in FLAGS else len(v) if isinstance(v, list) else None)
                 for n, v in terms)


def _values(terms: Sequence[Term]) -> dict[str, Any]:
    """Every bound value by its name (a list's by name_0, name_1, ...)."""
    out: dict[str, Any] = {}
    for n, v in terms:
        if n in FLAGS or n.startswith("field:"):
            continue
        if isinstance(v, list):
            out.update((f"{n}_{i}", x) for i, x in enumerate(v))
        else:
            out[n] = v
    return out


def _where(store: Store, terms: Sequence[Term]) -> list[Any]:
    conds = []
    for n, v in terms:
        if n in FLAGS or n.startswith("field:"):
            conds.append(_condition(store, n, v))
        elif isinstance(v, list):
            conds.append(_condition(store, n, [bindparam(f"{n}_{i}", x) for i, x in enumerate(v)]))
        else:
            conds.append(_condition(store, n, bindparam(n, v)))
    return conds


# Compiled SQL by backend and shape: building and compiling a statement costs more than
# running a first page of it, so each shape is compiled once per process.
_COMPILED: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}
_MAX_COMPILED = 512


def _run(store: Store, key: tuple[Any, ...], terms: Sequence[Term], build: Callable[[], Any],
         read: Callable[[Any, list[Any]], T]) -> T:
    """``read(tx, rows)`` of the rows of the statement ``build()`` makes of ``terms``, in one
    read transaction (compiled once per ``key`` and backend; a search on declared fields is
    compiled each time)."""
    values = _values(terms)
    cacheable = not any(n.startswith("field:") for n, _ in terms)
    full = (store.backend, *key)
    hit = _COMPILED.get(full) if cacheable else None
    if hit is None:
        compiled = build().compile(dialect=store.engine.dialect,
                                   compile_kwargs={"render_postcompile": True})
        order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        fixed = {k: v for k, v in compiled.params.items() if k not in values}  # LIMIT, OFFSET
        hit = (str(compiled), order, fixed if cacheable else dict(compiled.params))
        if cacheable:
            if len(_COMPILED) >= _MAX_COMPILED:
                _COMPILED.clear()
            _COMPILED[full] = hit
    sql, order, fixed = hit
    params = {**fixed, **values}
    args: Any = (tuple(_bind(store, params[k]) for k in order) if order is not None
                 else {k: _bind(store, v) for k, v in params.items()})
    with store.read() as tx:
        tx.cur.execute(sql, args)
        return read(tx, tx.cur.fetchall())


# A list that shows no clocks reads none: the column is the largest of a case row.
_NO_CLOCKS = tuple(literal_column("'{}'").label("clocks") if c.name == "clocks" else c
                   for c in CASE_COLS)


def page(store: Store, f: Filters, *, sort: str = "due", after: tuple[Any, str] | None = None,
         limit: int = 50, clocks: bool = True) -> list[CaseRecord]:
    """Up to ``limit`` cases matching ``f`` in ``sort`` order, after the key ``after``
    (``clocks=False``: the records without their clocks, left empty)."""
    col, descending = SORTS[sort]
    cols = CASE_COLS if clocks else _NO_CLOCKS
    terms = _terms(f)
    keyed = [*terms, ("after_key", after[0]), ("after_id", after[1])] if after else terms

    def build() -> Any:
        conds = _where(store, terms)
        if after is not None:
            pair = tuple_(bindparam("after_key", after[0]), bindparam("after_id", after[1]))
            conds.append(tuple_(col, C.c.id) < pair if descending else tuple_(col, C.c.id) > pair)
        order = (col.desc(), C.c.id.desc()) if descending else (col, C.c.id)
        return select(*cols).where(and_(true(), *conds)).order_by(*order).limit(limit)

    return _run(store, ("page", sort, limit, clocks, _shape(keyed)), keyed, build,
                lambda tx, rows: [tx.record(r) for r in rows])


def count(store: Store, f: Filters) -> int:
    terms = _terms(f)
    return _run(store, ("count", _shape(terms)), terms,
                lambda: select(func.count()).select_from(C).where(and_(true(), *_where(store, terms))),
                lambda tx, rows: int(rows[0][0]))


def sort_key(rec: CaseRecord, sort: str, far: datetime) -> Any:
    """The value a case sorts by (``far`` for a case with no next deadline)."""
    if sort == "due":
        return rec.next_due_at if rec.next_due_at is not None else far
    return rec.opened_at if sort == "opened" else rec.updated_at


def _bind(store: Store, v: Any) -> Any:
    if isinstance(v, datetime):
        return store.dialect.datetime_in(v)
    return v
