"""Business calendars: calendar days, and working days with China's public holidays.

Time on a calendar is measured in *business seconds*: every second of a
working day counts, no second of a day off does. A deadline of N working
days is N x 86,400 business seconds from its start; one of N calendar days
uses the calendar on which every day works. The holiday data (public
holidays and the official make-up working days, 調休) comes from the
``chinesecalendar`` package.

The official schedule for a year is published late in the year before, so a
deadline can run into a year the package does not know yet. By default such
days are counted as Monday to Friday and the result is marked
*provisional* (the engine records an event saying so, and
``run.py recompute-deadlines`` recomputes once the package is updated); with
``strict`` it is an :class:`UnknownCalendarYear` error instead. Never a
silent guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import chinese_calendar

from .errors import CaseworkError, UnknownCalendarYear

DAY = 86_400.0


_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(d|days?|workdays?|wd|calendar\s+days?|cd|h|hours?)\s*$", re.I)


@dataclass(frozen=True)
class Duration:
    """An amount of time: ``15d`` / ``60 days`` (days on the workflow's calendar),
    ``15 workdays`` (always working days), ``30 calendar days`` and ``36h`` (always
    calendar time)."""

    seconds: float
    unit: str  # "days" (the workflow's calendar), "workdays" or "calendar"

    @classmethod
    def parse(cls, text: str) -> Duration:
        m = _DURATION.match(str(text))
        if m is None:
            raise ValueError(f"{text!r} is not a duration (e.g. '15d', '60 days', '15 workdays', "
                             "'30 calendar days', '36h')")
        n, unit = float(m.group(1)), m.group(2).lower()
        if unit.startswith("h"):
            return cls(n * 3600, "calendar")
        if unit.startswith("c"):
            return cls(n * DAY, "calendar")
        return cls(n * DAY, "workdays" if unit.startswith("w") else "days")


class Calendar(Protocol):
    """Which local dates are working days."""

    name: str
    tz: ZoneInfo

    def is_workday(self, day: date) -> tuple[bool, bool]:
        """(working day?, provisional?) for a local date."""
        ...


class EveryDay:
    """Calendar days: every day works."""

    name = "calendar"

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    def is_workday(self, day: date) -> tuple[bool, bool]:
        return True, False


class Weekdays:
    """Monday to Friday, no holidays."""

    name = "weekdays"

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    def is_workday(self, day: date) -> tuple[bool, bool]:
        return day.weekday() < 5, False


class ChinaWorkdays:
    """Working days in mainland China: public holidays off, make-up working days on."""

    name = "cn_workdays"

    def __init__(self, tz: ZoneInfo, *, strict: bool = False) -> None:
        self.tz = tz
        self.strict = strict

    def is_workday(self, day: date) -> tuple[bool, bool]:
        return _cn_is_workday(day, self.strict)


@lru_cache(maxsize=8192)
def _cn_is_workday(day: date, strict: bool) -> tuple[bool, bool]:
    try:
        return bool(chinese_calendar.is_workday(day)), False
    except NotImplementedError as e:
        if strict:
            raise UnknownCalendarYear(
                f"the holiday calendar does not know {day.isoformat()} ({e}); update the "
                "chinesecalendar package, or allow provisional deadlines in the settings") from None
        return day.weekday() < 5, True


def make_calendar(name: str, tz: str = "Asia/Shanghai", *, strict: bool = False) -> Calendar:
    """The calendar called ``name``: ``cn_workdays``, ``weekdays`` or ``calendar``."""
    zone = ZoneInfo(tz)
    if name == "cn_workdays":
        return ChinaWorkdays(zone, strict=strict)
    if name == "weekdays":
        return Weekdays(zone)
    if name == "calendar":
        return EveryDay(zone)
    raise ValueError(f"unknown calendar {name!r}: use cn_workdays, weekdays or calendar")


CALENDAR_NAMES = ("cn_workdays", "weekdays", "calendar")


def _day_start(cal: Calendar, day: date) -> datetime:
    return datetime.combine(day, time(0), cal.tz).astimezone(UTC)


def business_seconds(cal: Calendar, start: datetime, end: datetime) -> tuple[float, bool]:
    """Business seconds in [start, end), and whether any day counted was provisional."""
    if end <= start:
        return 0.0, False
    if isinstance(cal, EveryDay):
        return (end - start).total_seconds(), False
    total = 0.0
    provisional = False
    day = start.astimezone(cal.tz).date()
    last = end.astimezone(cal.tz).date()
    while day <= last:
        works, prov = cal.is_workday(day)
        provisional |= prov
        if works:
            lo = max(start, _day_start(cal, day))
            hi = min(end, _day_start(cal, day + timedelta(days=1)))
            if hi > lo:
                total += (hi - lo).total_seconds()
        day += timedelta(days=1)
    return total, provisional


def instant_after(cal: Calendar, start: datetime, seconds: float) -> tuple[datetime, bool]:
    """The instant at which ``seconds`` business seconds have passed since ``start``."""
    if isinstance(cal, EveryDay):
        return start + timedelta(seconds=seconds), False
    provisional = False
    left = seconds
    day = start.astimezone(cal.tz).date()
    at = start
    for _ in range(366 * 20):
        nxt = _day_start(cal, day + timedelta(days=1))
        works, prov = cal.is_workday(day)
        provisional |= prov
        if works:
            room = (nxt - at).total_seconds()
            if left <= room:
                return at + timedelta(seconds=left), provisional
            left -= room
        at = nxt
        day += timedelta(days=1)
    raise CaseworkError(f"no {seconds / DAY:g} business days found within 20 years of {start}")
