"""Tables for a terminal, drawn with rich: wide (East Asian) characters take two cells.

Names (states, triggers, units, fields, figure labels) are never wrapped or cut: a
table is drawn at least as wide as its widest names need, even past the terminal's
width. Free text (a case's values, what an event changed, why an option is refused)
wraps inside its cell to fit ``width``. Output is plain text, without colours, so it
can be piped, compared in a test or pasted into a report.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table

if TYPE_CHECKING:
    from ..reports import Report

__all__ = ["DEFAULT_WIDTH", "Column", "make_table", "render", "report_table"]

DEFAULT_WIDTH = 120
_DAY = 86_400.0


@dataclass(frozen=True)
class Column:
    """A table column: ``name`` columns are never wrapped; ``number`` columns align right."""

    header: str
    kind: str = "name"  # "name", "number" or "text"


def make_table(columns: Sequence[Column], rows: Iterable[Sequence[Any]], *,
               title: str | None = None) -> Table:
    """A table of ``rows`` (values shown as text; None as an empty cell)."""
    table = Table(box=box.MINIMAL, show_edge=False, title=title, title_justify="left")
    for c in columns:
        if c.kind == "text":
            table.add_column(c.header, overflow="fold")
        else:
            table.add_column(c.header, no_wrap=True, overflow="fold",
                             justify="right" if c.kind == "number" else "left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def render(items: Iterable[RenderableType], width: int = DEFAULT_WIDTH) -> str:
    """Lines of text and tables as plain text; a table widens to keep its names whole."""
    buf = io.StringIO()
    console = Console(file=buf, width=100_000, color_system=None, force_terminal=False,
                      markup=False, highlight=False, emoji=False, legacy_windows=False)
    for item in items:
        if isinstance(item, str):
            console.print(item, soft_wrap=True)
            continue
        need = Measurement.get(console, console.options, item).minimum
        console.print(item, width=max(width, need))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


# -- a workflow's report ---------------------------------------------------------------
def _value(rep: Report, name: str, v: float | None) -> str:
    if v is None:
        return "-"
    if name in rep.ratios:
        return f"{v:.0%}"
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def report_table(rep: Report, width: int = DEFAULT_WIDTH) -> str:
    """A report as text: its figures (per group with ``by``), overdue cases, escalations
    and time in state."""
    period = (f"{rep.start:%Y-%m-%d} .. {rep.end:%Y-%m-%d}" if rep.start and rep.end
              else "all time")
    where = ", ".join(f"{k} in {list(v)}" for k, v in rep.where.items())
    groups = list(rep.rows)
    columns = [Column("figure"), Column("total", "number"),
               *(Column(str(g), "number") for g in groups)]
    rows = [[rep.labels[name], _value(rep, name, total),
             *(_value(rep, name, rep.rows[g].get(name)) for g in groups)]
            for name, total in rep.totals.items()]
    items: list[RenderableType] = [
        f"report: {rep.workflow}, {period}" + (f", {where}" if where else "")
        + (f", by {rep.by}" if rep.by else ""),
        make_table(columns, rows)]
    n, avg, longest = rep.overdue
    items.append(f"overdue now: {n} case(s), on average {avg:.1f} days, longest {longest:.1f} days")
    if rep.escalations:
        items.append("escalations by rung: " + ", ".join(
            f"{k} {v}" for k, v in sorted(rep.escalations.items())))
    if rep.time_in_state:
        items.append("time in state (completed stays), in days:")
        items.append(make_table(
            [Column("state"), Column("stays", "number"), Column("average", "number"),
             Column("90th percentile", "number")],
            [[s, cnt, f"{a / _DAY:.1f}", f"{p / _DAY:.1f}"]
             for s, (cnt, a, p) in sorted(rep.time_in_state.items())]))
    items.append("read from the maintained figures" if rep.source == "figures" else
                 "counted from the events" + (f" ({rep.note})" if rep.note else ""))
    return render(items, width)
