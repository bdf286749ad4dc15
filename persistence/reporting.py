"""Report queries: counts, sums and durations by SQL aggregation over cases and events.

Nothing here loads cases into Python: each figure is one ``GROUP BY`` query,
optionally broken down by a field of the cases' data (``unit``, ``source``...).
Periods are half-open ``[start, end)`` in naive UTC; ``None`` leaves a side open.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, text
from sqlalchemy import case as sql_case
from sqlalchemy.sql.elements import ColumnElement

from .sql import C, E, F, P, S
from .store import Store

Where = Mapping[str, Sequence[Any]]
ALL = "all"


@dataclass(frozen=True)
class Scope:
    """Which cases a figure looks at: a workflow, filters on fields, a breakdown field."""

    workflow: str
    where: Where
    by: str | None = None


class ReportQueries:
    """The aggregate queries of reports, for one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.d = store.dialect
        self._conn: Any = None

    @contextmanager
    def snapshot(self) -> Iterator[ReportQueries]:
        """Run every query of one report in one read transaction: one consistent snapshot,
        and on SQLite no write lock (a deferred ``BEGIN``)."""
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(casework_read=True)
            with conn.begin():
                self._conn = conn
                try:
                    yield self
                finally:
                    self._conn = None

    def _group(self, scope: Scope) -> Any:
        if scope.by is None:
            return literal(ALL).label("grp")
        return self.d.json_field(C.c.data, scope.by).label("grp")

    def _cases(self, scope: Scope) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [C.c.workflow == scope.workflow]
        for key, values in scope.where.items():
            conds.append(or_(*[self.d.json_equals(C.c.data, key, v) for v in values]))
        return conds

    def _run(self, stmt: Any) -> list[Any]:
        if self._conn is not None:
            return list(self._conn.execute(stmt))
        with self.store.engine.connect() as conn:
            return list(conn.execute(stmt))

    @staticmethod
    def _period(col: Any, start: datetime | str | None, end: datetime | str | None
                ) -> list[ColumnElement[bool]]:
        out = []
        if start is not None:
            out.append(col >= start)
        if end is not None:
            out.append(col < end)
        return out

    def _by_group(self, stmt: Any) -> dict[str | None, float]:
        return {r[0]: (r[1] or 0) for r in self._run(stmt)}

    def cases_opened(self, scope: Scope, start: datetime | None, end: datetime | None
                     ) -> dict[str | None, float]:
        g = self._group(scope)
        return self._by_group(select(g, func.count()).where(
            *self._cases(scope), *self._period(C.c.opened_at, start, end)).group_by(g))

    def events(self, scope: Scope, start: datetime | None, end: datetime | None,
               names: Sequence[str], kinds: Sequence[str], sum_field: str | None = None
               ) -> dict[str | None, float]:
        """Events in the period (count, or the sum of a numeric field of their details)."""
        g = self._group(scope)
        value = (func.coalesce(func.sum(self.d.json_number(E.c.details, sum_field)), 0)
                 if sum_field else func.count())
        conds = [*self._cases(scope), *self._period(E.c.at, start, end)]
        if names:
            conds.append(E.c.name.in_(list(names)))
        if kinds:
            conds.append(E.c.kind.in_(list(kinds)))
        return self._by_group(select(g, value).select_from(E.join(C, C.c.id == E.c.case_id))
                              .where(*conds).group_by(g))

    def open_at(self, scope: Scope, end: datetime | None) -> dict[str | None, float]:
        g = self._group(scope)
        conds = self._cases(scope)
        if end is None:
            conds.append(C.c.final.is_(False))
        else:
            conds += [C.c.opened_at < end, or_(C.c.closed_at.is_(None), C.c.closed_at >= end)]
        return self._by_group(select(g, func.count()).where(*conds).group_by(g))

    def closed(self, scope: Scope, start: datetime | None, end: datetime | None,
               states: Sequence[str], without: Sequence[str] = ()) -> dict[str | None, float]:
        """Cases closed in the period (in ``states``; with no event named in ``without``)."""
        g = self._group(scope)
        conds = [*self._cases(scope), C.c.closed_at.is_not(None),
                 *self._period(C.c.closed_at, start, end)]
        if states:
            conds.append(C.c.state.in_(list(states)))
        if without:
            conds.append(~select(E.c.seq).where(E.c.case_id == C.c.id,
                                               E.c.name.in_(list(without))).exists())
        return self._by_group(select(g, func.count()).where(*conds).group_by(g))

    def overdue(self, scope: Scope, end: datetime) -> dict[str | None, tuple[int, float, float]]:
        """Open cases overdue at ``end``: (count, average days overdue, longest days overdue)."""
        g = self._group(scope)
        days = self.d.seconds_between(C.c.overdue_since, literal(end)) / 86400.0
        # Written as the partial index's own condition, so the planner can use it.
        overdue = text("final = 0 AND overdue_since IS NOT NULL" if self.d.name == "sqlite"
                       else "NOT final AND overdue_since IS NOT NULL")
        rows = self._run(select(g, func.count(), func.avg(days), func.max(days)).where(
            *self._cases(scope), overdue, C.c.overdue_since < end).group_by(g))
        return {r[0]: (int(r[1]), float(r[2] or 0), float(r[3] or 0)) for r in rows}

    def escalations(self, scope: Scope, start: datetime | None, end: datetime | None
                    ) -> dict[tuple[str | None, str], int]:
        """Escalation events in the period per group and rung."""
        g = self._group(scope)
        rows = self._run(select(g, E.c.name, func.count())
                         .select_from(E.join(C, C.c.id == E.c.case_id))
                         .where(*self._cases(scope), E.c.kind == "escalation",
                                *self._period(E.c.at, start, end))
                         .group_by(g, E.c.name))
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def resolution(self, scope: Scope, start: datetime | None, end: datetime | None
                   ) -> list[tuple[str | None, datetime, datetime]]:
        """(group, opened, closed) of the cases closed in the period."""
        g = self._group(scope)
        rows = self._run(select(g, C.c.opened_at, C.c.closed_at).where(
            *self._cases(scope), C.c.closed_at.is_not(None),
            *self._period(C.c.closed_at, start, end)))
        dt = self.d.datetime_out
        return [(r[0], dt(r[1]), dt(r[2])) for r in rows]

    def reassignments(self, scope: Scope, start: datetime | None, end: datetime | None
                      ) -> dict[str | None, int]:
        """Reassignments (a slot already held given to another) in the period, per lead unit."""
        rows = self._run(select(C.c.unit, func.count())
                         .select_from(E.join(C, C.c.id == E.c.case_id))
                         .where(*self._cases(scope), E.c.kind == "assignment",
                                E.c.name.like("reassign:%"), *self._period(E.c.at, start, end))
                         .group_by(C.c.unit))
        return {r[0]: int(r[1]) for r in rows}

    def time_in_state(self, scope: Scope, start: datetime | None, end: datetime | None
                      ) -> dict[str, tuple[int, float, float]]:
        """Completed stays that ended in the period, per state: (stays, mean s, 90th pct s).

        A stay runs from the event that entered a state to the next event that changed it;
        the 90th percentile is the smallest stay with at least 90% of stays at or below it.
        """
        moves = (select(E.c.case_id, E.c.to_state.label("state"), E.c.at.label("entered"),
                        func.lead(E.c.at).over(partition_by=E.c.case_id, order_by=E.c.seq)
                        .label("left"))
                 .select_from(E.join(C, C.c.id == E.c.case_id))
                 .where(*self._cases(scope), or_(E.c.kind == "open", and_(
                     E.c.kind.in_(["transition", "migration"]),
                     or_(E.c.from_state.is_(None), E.c.from_state != E.c.to_state))))
                 .cte("moves"))
        secs = self.d.seconds_between(moves.c.entered, moves.c.left)
        stays = (select(moves.c.state, secs.label("secs"))
                 .where(moves.c.left.is_not(None), *self._period(moves.c.left, start, end))
                 .cte("stays"))
        ranked = select(stays.c.state, stays.c.secs,
                        func.row_number().over(partition_by=stays.c.state, order_by=stays.c.secs)
                        .label("rn"),
                        func.count().over(partition_by=stays.c.state).label("n")).cte("ranked")
        p90 = func.min(sql_case((ranked.c.rn >= 0.9 * ranked.c.n, ranked.c.secs)))
        rows = self._run(select(ranked.c.state, func.max(ranked.c.n), func.avg(ranked.c.secs), p90)
                         .group_by(ranked.c.state))
        return {state: (int(n), float(avg or 0), float(p or 0)) for state, n, avg, p in rows}

    # -- the maintained figures (see casework.figures) ---------------------
    def figure_plan(self, workflow: str) -> str | None:
        rows = self._run(select(P.c.fingerprint).where(P.c.workflow == workflow))
        return rows[0][0] if rows else None

    def cells(self, workflow: str, dim: str, start: str | None, end: str | None,
              figures: Sequence[str] | None = None) -> dict[tuple[str, str], tuple[float, float]]:
        """The maintained cells of ``workflow`` for one breakdown (``""``: those kept only
        in total) summed over the local days ``[start, end)``: (figure, value) -> (n, s)."""
        conds = [F.c.workflow == workflow, F.c.dim == dim, *self._period(F.c.day, start, end)]
        if figures is not None:
            conds.append(F.c.figure.in_(list(figures)))
        rows = self._run(select(F.c.figure, F.c.value, func.sum(F.c.n), func.sum(F.c.s))
                         .where(*conds).group_by(F.c.figure, F.c.value))
        return {(r[0], r[1]): (float(r[2] or 0), float(r[3] or 0)) for r in rows}

    def stay_rank(self, workflow: str, state: str, start: str | None, end: str | None,
                  rank: int) -> float | None:
        """The ``rank``-th shortest (from 1) completed stay in ``state`` that ended in the
        local days ``[start, end)``, in seconds."""
        rows = self._run(select(S.c.secs).where(S.c.workflow == workflow, S.c.state == state,
                                                *self._period(S.c.day, start, end))
                         .order_by(S.c.secs).limit(1).offset(rank - 1))
        return float(rows[0][0]) if rows else None
