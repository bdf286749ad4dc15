"""Shared helpers for the scheduler tests: moving the clock, reading the scheduler's events,
and an independent model of China's working days (the rows of the timers and events
tables are read with ``tests.helpers``).

Not a test module (pytest does not collect it); imported as ``tests.scheduler_steps``.
The working-day model here deliberately does not call ``engine.calendars``: it builds
the list of working dates from ``chinese_calendar.is_workday`` and puts them end to end
on a timeline of 24-hour slots, so the expected instants are computed independently.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar
from casework import Engine, Event, FrozenClock

SHANGHAI = ZoneInfo("Asia/Shanghai")
US = timedelta(microseconds=1)
DAY = timedelta(days=1)
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the FrozenClock's default start


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, us: int = 0) -> datetime:
    """An instant given as Asia/Shanghai wall time, as aware UTC."""
    return datetime(y, m, d, hh, mm, ss, us, tzinfo=SHANGHAI).astimezone(UTC)


# -- events and timers ---------------------------------------------------------------

def scheduler_events(engine: Engine, case_id: str) -> list[Event]:
    """The case's events written by the scheduler, oldest first."""
    return [e for e in engine.history(case_id) if e.actor == "scheduler"]


def fire_at(engine: Engine, clock: FrozenClock, when: datetime,
            case_id: str | None = None) -> list[Event]:
    """Move the clock to ``when``, run the scheduler once; the case's new scheduler events."""
    before = len(scheduler_events(engine, case_id)) if case_id is not None else 0
    clock.set(when)
    engine.run_due()
    return scheduler_events(engine, case_id)[before:] if case_id is not None else []


def fires_exactly_at(engine: Engine, clock: FrozenClock, case_id: str,
                     when: datetime) -> list[Event]:
    """Assert nothing fires on the case at ``when`` - 1µs and something does at ``when``."""
    early = fire_at(engine, clock, when - US, case_id)
    assert early == [], f"fired one microsecond before {when}: {[(e.name, e.details) for e in early]}"
    got = fire_at(engine, clock, when, case_id)
    assert got, f"nothing fired at {when}"
    return got


# -- an independent model of China's working days ---------------------------------------

_ORIGIN = date(2026, 1, 1)


@lru_cache(maxsize=1)
def _working_dates() -> tuple[date, ...]:
    """Every working date of 2026, in order (from the holiday package directly)."""
    days = (_ORIGIN + timedelta(days=n) for n in range(365))
    return tuple(d for d in days if chinese_calendar.is_workday(d))


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), SHANGHAI).astimezone(UTC)


def business_offset(when: datetime) -> timedelta:
    """Business time on the working-day timeline from 1 January 2026 to ``when``."""
    day = when.astimezone(SHANGHAI).date()
    full = sum(1 for d in _working_dates() if d < day)
    part = when - _midnight(day) if chinese_calendar.is_workday(day) else timedelta(0)
    return full * DAY + part


def business_instant(offset: timedelta) -> datetime:
    """The earliest instant at which ``offset`` business time has passed since 1 January 2026."""
    whole, rem = divmod(offset, DAY)
    work = _working_dates()
    if rem == timedelta(0) and whole > 0:
        return _midnight(work[whole - 1] + DAY)  # the end of the last working day counted
    return _midnight(work[whole]) + rem


def working_days_after(start: datetime, days: float) -> datetime:
    """``days`` working days of business time after ``start`` (Asia/Shanghai dates)."""
    return business_instant(business_offset(start) + timedelta(days=days))
