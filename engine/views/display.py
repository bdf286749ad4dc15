"""A case for the command line: state, data, history and options, with PII masked.

:class:`CaseView` gathers what ``show`` prints from the engine's public API and gives
it as tables (:meth:`CaseView.to_text`), as CSV (the history, one event a row) and as
JSON (the ``to_dict()`` forms of the case, its events and the options). The values of
the workflow's personal (``pii``) fields are masked in all three.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType

from .tables import DEFAULT_WIDTH, Column, make_table, render

if TYPE_CHECKING:
    from .. import Case, Deadline, Engine, Event, TriggerOption
    from ..workflow import Workflow

__all__ = ["CaseView", "format_case"]


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


def _who(ev: Event) -> str:
    return f"{ev.role}:{ev.actor}" if ev.role else (ev.actor or "-")


def _when(ev: Event, tz: tzinfo) -> str:
    return f"{ev.at.astimezone(tz):%Y-%m-%d %H:%M}"


@dataclass(frozen=True)
class CaseView:
    """One case as ``show`` prints it; ``case`` and ``history`` already masked."""

    case: Case
    workflow: Workflow
    history: list[Event]
    actor: str | None = None
    options: list[TriggerOption] | None = None
    deadlines: list[Deadline] | None = None

    @classmethod
    def load(cls, engine: Engine, case_id: str, *, actor: str | None = None) -> CaseView:
        """Read the case, its history and (for ``actor``) what may be done now."""
        case = engine.get_case(case_id)
        wf = engine.workflow(case.workflow, case.version)
        history = [ev.masked(wf.pii) for ev in engine.history(case.id)]
        options = engine.available_triggers(case.id, actor) if actor is not None else None
        return cls(case.masked(wf.pii), wf, history, actor, options, engine.deadlines(case.id))

    def to_dict(self) -> dict[str, Any]:
        """The case, its events and the options as JSON-ready values (PII masked)."""
        out: dict[str, Any] = {"case": self.case.to_dict(),
                               "history": [ev.to_dict() for ev in self.history],
                               "deadlines": [d.to_dict() for d in self.deadlines or []]}
        if self.options is not None:
            out["actor"] = self.actor
            out["options"] = [o.to_dict() for o in self.options]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_csv(self) -> str:
        """The history, one event a row (changes and details as JSON objects)."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["case_id", "seq", "at", "kind", "name", "from_state", "to_state", "actor",
                    "role", "changes", "details"])
        for ev in self.history:
            d = ev.to_dict()
            w.writerow([d["case_id"], d["seq"], d["at"], d["kind"], d["name"], d["from_state"],
                        d["to_state"], d["actor"], d["role"],
                        json.dumps(d["changes"], ensure_ascii=False),
                        json.dumps(d["details"], ensure_ascii=False)])
        return buf.getvalue()

    def to_text(self, width: int = DEFAULT_WIDTH) -> str:
        """The case as tables: its fields, its history and, for an actor, the options."""
        c, wf, tz = self.case, self.workflow, self.workflow.tz
        items: list[RenderableType] = [
            f"case {c.id}  ({c.workflow} @ {c.version})",
            f"  state: {c.state}{'  [final]' if c.final else ''}   row version: "
            f"{c.row_version}   escalation level: {c.escalation_level}",
            f"  opened {c.opened_at.astimezone(tz):%Y-%m-%d %H:%M}, updated "
            f"{c.updated_at.astimezone(tz):%Y-%m-%d %H:%M} ({wf.timezone})",
            "",
            make_table([Column("field"), Column("value", "text")],
                       [[k, _text(c.data[k])] for k in sorted(c.data)], title="data"),
            "",
            make_table([Column("seq", "number"), Column("at"), Column("kind"), Column("name"),
                        Column("state"), Column("by")],
                       [[ev.seq, _when(ev, tz), ev.kind, ev.name, ev.to_state, _who(ev)]
                        for ev in self.history], title="history (the state after each event)"),
            "",
            make_table([Column("seq", "number"), Column("field"), Column("value", "text")],
                       [[ev.seq, k, _text(v)] for ev in self.history
                        for k, v in (*ev.changes.items(), *ev.details.items())],
                       title="what each event set or recorded"),
        ]
        if self.deadlines:
            items.append("")
            items.append(make_table(
                [Column("deadline"), Column("status"), Column("counting"), Column("due"),
                 Column("business elapsed", "number"), Column("actual elapsed", "number"),
                 Column("time left", "number"), Column("paused", "text")],
                [[d.name, d.status + (" (provisional)" if d.provisional else ""),
                  f"{d.counting} on {d.calendar}",
                  f"{d.due.astimezone(tz):%Y-%m-%d %H:%M}" if d.due else "-",
                  _span(d.business_elapsed.total_seconds()),
                  _span(d.actual_elapsed.total_seconds()),
                  _span(d.time_left.total_seconds()) if d.time_left is not None else "-",
                  "; ".join(f"{a.astimezone(tz):%m-%d %H:%M} to "
                            + (f"{b.astimezone(tz):%m-%d %H:%M}" if b else "now")
                            for a, b in d.paused)] for d in self.deadlines],
                title="deadlines"))
        if self.options is not None:
            items.append("")
            items.append(make_table(
                [Column("may"), Column("kind"), Column("name"), Column("needs", "text"),
                 Column("why not", "text")],
                [["yes" if o.allowed else "no", o.kind, o.name, ", ".join(o.requires),
                  o.reason or ""] for o in self.options],
                title=f"what {self.actor} may do now"))
        return render(items, width)


def _span(seconds: float) -> str:
    """A duration as days and hours (negative: overdue)."""
    sign = "-" if seconds < 0 else ""
    s = abs(int(seconds))
    days, rest = divmod(s, 86_400)
    return f"{sign}{days}d {rest // 3600:02d}h"


def format_case(engine: Engine, case_id: str, *, actor: str | None = None,
                width: int = DEFAULT_WIDTH) -> str:
    """The case's state, data (PII masked), history and, for ``actor``, what may be done now."""
    return CaseView.load(engine, case_id, actor=actor).to_text(width)
