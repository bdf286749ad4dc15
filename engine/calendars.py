"""Business calendars: calendar days, and working days with China's public holidays.

Time on a calendar is measured in *business seconds*: every second of a
working day counts, no second of a day off does. A deadline of N working
days is N x 86,400 business seconds from its start; one of N calendar days
uses the calendar on which every day works. The holiday data (public
holidays and the official make-up working days, 調休) comes from the
``chinesecalendar`` package.

The official schedule for a year is published late in the year before, so a
deadline can run into a year the package does not know yet. An operator can
declare that year's schedule in the settings (its days off and make-up working
days, as the State Council's notice lists them): the calendar then uses it, and
once the package knows the year, :func:`declared_disagreements` says where the
two differ. Without either, such days are counted as Monday to Friday and the
result is marked *provisional* (the engine records an event saying so, and
``casework recompute-deadlines`` recomputes once the year is known); with
``strict`` it is an :class:`UnknownCalendarYear` error instead. Never a
silent guess.

:func:`statutory_end` counts a period in days as the law counts it (Civil Code
arts. 201-203): the day it starts is not counted, its last day ends at 24:00
local time (or the office's closing time), and a last day that is not a working
day on the official calendar moves to the first working day after it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
    days: int | None = None  # a whole number of days (None: hours, or a fraction of a day)

    @classmethod
    def parse(cls, text: str) -> Duration:
        m = _DURATION.match(str(text))
        if m is None:
            raise ValueError(f"{text!r} is not a duration (e.g. '15d', '60 days', '15 workdays', "
                             "'30 calendar days', '36h')")
        n, unit = float(m.group(1)), m.group(2).lower()
        if n > 36_500:
            raise ValueError(f"{text!r} is longer than a hundred years")
        whole = int(n) if n.is_integer() else None
        if unit.startswith("h"):
            return cls(n * 3600, "calendar")
        if unit.startswith("c"):
            return cls(n * DAY, "calendar", whole)
        return cls(n * DAY, "workdays" if unit.startswith("w") else "days", whole)


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


@dataclass(frozen=True)
class DeclaredYear:
    """A year's official schedule as an operator declared it from the State Council's
    notice: the days off (public holidays and the rest days around them) and the make-up
    working days (調休上班). Every other day is a working day from Monday to Friday."""

    year: int
    days_off: frozenset[date]
    workdays: frozenset[date]

    def is_workday(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.days_off:
            return False
        return day.weekday() < 5


def package_knows(year: int) -> bool:
    """Whether the holiday package has the official schedule of ``year``."""
    try:
        chinese_calendar.is_workday(date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


class ChinaWorkdays:
    """Working days in mainland China: public holidays off, make-up working days on; from
    the holiday package, or from the operator's declared schedule for a year it does not
    know yet."""

    name = "cn_workdays"

    def __init__(self, tz: ZoneInfo, *, strict: bool = False,
                 declared: Mapping[int, DeclaredYear] | None = None) -> None:
        self.tz = tz
        self.strict = strict
        self.declared = dict(declared or {})

    def is_workday(self, day: date) -> tuple[bool, bool]:
        known = _cn_package(day)
        if known is not None:
            return known, False
        year = self.declared.get(day.year)
        if year is not None:
            return year.is_workday(day), False
        if self.strict:
            raise UnknownCalendarYear(
                f"the holiday calendar does not know {day.year} ({day.isoformat()}); declare "
                "that year's schedule in the settings, update the chinesecalendar package, or "
                "allow provisional deadlines") from None
        return day.weekday() < 5, True

    def declared_in(self, start: datetime, end: datetime) -> list[int]:
        """The declared years a span touches (counted on operator data, not the package's)."""
        lo, hi = start.astimezone(self.tz).year, end.astimezone(self.tz).year
        return [y for y in range(lo, hi + 1) if y in self.declared and not package_knows(y)]


@lru_cache(maxsize=8192)
def _cn_package(day: date) -> bool | None:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


def declared_disagreements(declared: Mapping[int, DeclaredYear]) -> list[str]:
    """For each declared year the package knows by now, the days on which the declared
    schedule and the package's disagree (empty: they agree)."""
    out: list[str] = []
    for year, d in sorted(declared.items()):
        if not package_knows(year):
            continue
        day = date(year, 1, 1)
        while day.year == year:
            theirs = _cn_package(day)
            if theirs is not None and theirs != d.is_workday(day):
                said = "a working day" if d.is_workday(day) else "a day off"
                real = "a working day" if theirs else "a day off"
                out.append(f"{day.isoformat()}: declared {said}, the official calendar "
                           f"(chinesecalendar {chinese_calendar.__version__}) has {real}")
            day += timedelta(days=1)
    return out


def calendar_data(cal: Calendar) -> str:
    """What a calendar's days come from, to keep with a clock (so a later change of the
    data is seen)."""
    if isinstance(cal, ChinaWorkdays):
        years = sorted(cal.declared)
        return (f"chinesecalendar {chinese_calendar.__version__}"
                + (f"; declared {', '.join(map(str, years))}" if years else ""))
    return cal.name


def make_calendar(name: str, tz: str = "Asia/Shanghai", *, strict: bool = False,
                  declared: Mapping[int, DeclaredYear] | None = None) -> Calendar:
    """The calendar called ``name``: ``cn_workdays``, ``weekdays`` or ``calendar``."""
    zone = ZoneInfo(tz)
    if name == "cn_workdays":
        return ChinaWorkdays(zone, strict=strict, declared=declared)
    if name == "weekdays":
        return Weekdays(zone)
    if name == "calendar":
        return EveryDay(zone)
    raise ValueError(f"unknown calendar {name!r}: use cn_workdays, weekdays or calendar")


CALENDAR_NAMES = ("cn_workdays", "weekdays", "calendar")


class Calendars:
    """The calendars of one workflow: each by name, the official one (which moves a
    statutory last day off a day of rest), and the office's closing time if it has one."""

    def __init__(self, name: str, tz: str, *, strict: bool = False,
                 declared: Mapping[int, DeclaredYear] | None = None,
                 closing: time | None = None) -> None:
        self.by_name: dict[str, Calendar] = {
            n: make_calendar(n, tz, strict=strict, declared=declared) for n in CALENDAR_NAMES}
        self.default = self.by_name[name]
        # A working-day calendar knows the days of rest; on calendar days the official
        # (China's) calendar moves a last day of rest.
        self.official = self.default if name != "calendar" else self.by_name["cn_workdays"]
        self.closing = closing
        self.tz = self.default.tz

    def for_unit(self, unit: str) -> Calendar:
        """The calendar a duration's unit counts on (``days``: the workflow's)."""
        if unit == "days":
            return self.default
        if unit == "workdays":
            return self.official
        return self.by_name["calendar"]

    def named(self, name: str | None) -> Calendar:
        return self.by_name.get(name or "", self.default)


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


def _end_of(cal: Calendar, day: date, closing: time | None) -> datetime:
    """When ``day`` ends: at 24:00 local time, or at the office's closing time."""
    if closing is None:
        return _day_start(cal, day + timedelta(days=1))
    return datetime.combine(day, closing, cal.tz).astimezone(UTC)


def first_working_day(official: Calendar, day: date) -> tuple[date, bool]:
    """``day`` if it is a working day on the official calendar, else the first one after."""
    provisional = False
    for _ in range(400):
        works, prov = official.is_workday(day)
        provisional |= prov
        if works:
            return day, provisional
        day += timedelta(days=1)
    raise CaseworkError(f"no working day found within a year after {day.isoformat()}")


def statutory_last_day(counting: Calendar, start: datetime, days: int) -> tuple[date, bool]:
    """The last day of a period of ``days`` days starting at ``start``, before any move off a
    day of rest: the start day is not counted, so the period runs from the next day; on a
    working-day calendar only working days are counted."""
    day = start.astimezone(counting.tz).date()
    provisional = False
    if isinstance(counting, EveryDay):
        return day + timedelta(days=days), False
    left = days
    while left > 0:
        day += timedelta(days=1)
        works, prov = counting.is_workday(day)
        provisional |= prov
        if works:
            left -= 1
    return day, provisional


def statutory_end(counting: Calendar, official: Calendar, last_day: date,
                  closing: time | None = None) -> tuple[datetime, bool]:
    """The instant a period whose last day is ``last_day`` ends: at the end of that day, or
    of the first working day after it on the official calendar when it is a day of rest."""
    day, provisional = first_working_day(official, last_day)
    return _end_of(counting, day, closing), provisional


def snap_to_day_end(counting: Calendar, official: Calendar, when: datetime,
                    closing: time | None = None) -> tuple[datetime, bool]:
    """A statutory instant for a period resumed after a pause: the end of the day ``when``
    falls in (the days of a period are whole days), moved off a day of rest."""
    local = when.astimezone(counting.tz)
    day = local.date()
    if local.time() == time(0) and closing is None:
        day -= timedelta(days=1)  # midnight is the end of the day before
    return statutory_end(counting, official, day, closing)


class WorkdayIndex:
    """Business seconds between instants in O(1), for many spans at once (reports): the
    number of working days before each local date of a range, counted once."""

    def __init__(self, cal: Calendar, first: date, last: date) -> None:
        self.cal = cal
        self.first = first
        self.before: dict[date, int] = {}
        n = 0
        day = first
        while day <= last + timedelta(days=1):
            self.before[day] = n
            n += 1 if cal.is_workday(day)[0] else 0
            day += timedelta(days=1)

    def seconds(self, a: datetime, b: datetime) -> float:
        """Business seconds in [a, b) (both within the index's range)."""
        if b <= a:
            return 0.0
        la, lb = a.astimezone(self.cal.tz), b.astimezone(self.cal.tz)
        da, db = la.date(), lb.date()
        if da == db:
            return (b - a).total_seconds() if self.cal.is_workday(da)[0] else 0.0
        out = 0.0
        if self.cal.is_workday(da)[0]:
            out += (_day_start(self.cal, da + timedelta(days=1)) - a).total_seconds()
        out += (self.before[db] - self.before[da + timedelta(days=1)]) * DAY
        if self.cal.is_workday(db)[0]:
            out += (b - _day_start(self.cal, db)).total_seconds()
        return out
