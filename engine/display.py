"""Plain-text views of a case for the command line, with PII masked."""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import Any

from .log import mask_data
from .types import Event


def _fmt_values(values: dict[str, Any] | Any, pii: frozenset[str]) -> str:
    if not values:
        return ""
    masked = mask_data(dict(values), pii)
    return " " + json.dumps(masked, ensure_ascii=False, separators=(", ", "="))[1:-1].replace(
        '"', "")


def format_event(ev: Event, pii: frozenset[str], tz: tzinfo | None = None) -> str:
    """One history line: seq, time, what happened, who, what changed."""
    move = (f"{ev.from_state} -> {ev.to_state}" if ev.from_state != ev.to_state
            else f"in {ev.to_state}")
    if ev.from_state is None:
        move = f"-> {ev.to_state}"
    who = f"{ev.role}:{ev.actor}" if ev.role else (ev.actor or "-")
    extra = _fmt_values(ev.details, pii) if ev.details else ""
    at = ev.at.astimezone(tz) if tz is not None else ev.at
    return (f"  {ev.seq:>3} {at:%Y-%m-%d %H:%M} {ev.kind:<10} {ev.name:<22} {move:<52} "
            f"{who}{_fmt_values(ev.changes, pii)}{extra}")


def format_case(engine: Any, case_id: str, *, actor: str | None = None) -> str:
    """The case's state, data (PII masked), history and, for ``actor``, what may be done now."""
    case = engine.get_case(case_id)
    wf = engine.workflow(case.workflow, case.version)
    tz = wf.tz
    lines = [
        f"case {case.id}  ({case.workflow} @ {case.version})",
        f"  state: {case.state}{'  [final]' if case.final else ''}   row version: "
        f"{case.row_version}   escalation level: {case.escalation_level}",
        f"  opened {case.opened_at.astimezone(tz):%Y-%m-%d %H:%M}, updated "
        f"{case.updated_at.astimezone(tz):%Y-%m-%d %H:%M} ({wf.timezone})",
        "  data:",
    ]
    masked = mask_data(dict(case.data), wf.pii)
    for k in sorted(masked):
        lines.append(f"    {k}: {masked[k]}")
    lines.append("  history:")
    lines.extend(format_event(ev, wf.pii, tz) for ev in engine.history(case_id))
    if actor is not None:
        lines.append(f"  what {actor} may do now:")
        for opt in engine.available_triggers(case_id, actor):
            mark = "yes" if opt.allowed else "no "
            why = f"  ({opt.reason})" if opt.reason else ""
            needs = f"  needs {', '.join(opt.requires)}" if opt.requires else ""
            lines.append(f"    {mark} {opt.kind:<10} {opt.name}{needs}{why}")
    return "\n".join(lines)
