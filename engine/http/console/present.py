"""How the console writes times, durations, urgency and values."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any

from ...types import MASK

__all__ = ["URGENCY", "local", "span", "urgency", "value_text"]

# Time left before a deadline, by colour: overdue, due within 2 days, within 7, later.
URGENCY = (("overdue", 0.0), ("urgent", 2 * 86_400.0), ("soon", 7 * 86_400.0))


def local(t: datetime | None, tz: tzinfo, *, seconds: bool = False) -> str:
    if t is None:
        return ""
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def span(seconds: float | timedelta | None) -> str:
    """A duration as days and hours: ``3d 04h``; negative: ``-2d 01h`` (overdue by)."""
    if seconds is None:
        return ""
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    sign = "-" if seconds < 0 else ""
    s = abs(int(seconds))
    days, rest = divmod(s, 86_400)
    hours, rest = divmod(rest, 3600)
    if days == 0 and hours == 0:
        return f"{sign}{rest // 60}m"
    return f"{sign}{days}d {hours:02d}h"


def urgency(time_left: float | None, overdue: bool = False) -> str:
    """The colour class of a deadline's time left: overdue, urgent, soon, ok (none: no deadline)."""
    if overdue or (time_left is not None and time_left < 0):
        return "overdue"
    if time_left is None:
        return "none"
    for name, bound in URGENCY[1:]:
        if time_left <= bound:
            return name
    return "ok"


def value_text(value: Any) -> str:
    """A stored value as text (a masked one as it is)."""
    if value is None:
        return ""
    if value == MASK:
        return MASK
    if isinstance(value, float) and value.is_integer():
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)
