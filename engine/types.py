"""The value objects of the public API: actors, cases, events, timers, options.

Every value a host receives is a frozen dataclass with its fields documented and a
``to_dict()`` that gives a JSON-ready form (datetimes as ISO 8601 strings in UTC,
enums as their values). Closed sets (event kinds, timer kinds and statuses) are enums.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

MASK = "***"


class EventKind(StrEnum):
    """What an event of a case's history records."""

    OPEN = "open"                # the case was opened
    TRANSITION = "transition"    # a trigger moved the case
    ACTIVITY = "activity"        # work recorded without a change of state
    WARNING = "warning"          # a share of a deadline's time has passed
    ESCALATION = "escalation"    # a breached deadline took the case one rung up the ladder
    BREACH = "breach"            # a deadline was breached with no rung left to climb (or no ladder)
    CYCLE = "cycle"              # a recurring cycle came round for the case
    CHECK = "check"              # a cron check across all cases looked at this one
    DEADLINE = "deadline"        # the case's deadlines were recomputed
    MIGRATION = "migration"      # the case was moved to another version of its workflow
    ASSIGNMENT = "assignment"    # a slot (leader, handler, unit...) was assigned or reassigned
    DELEGATION = "delegation"    # a stand-in was named for a slot, or their period ended


class TimerKind(StrEnum):
    """What a timer does when it falls due."""

    WARNING = "warning"
    BREACH = "breach"
    CYCLE = "cycle"
    CRON = "cron"
    DELEGATION = "delegation"


class TimerStatus(StrEnum):
    """Where a timer is in its life."""

    PENDING = "pending"
    FIRED = "fired"
    CANCELLED = "cancelled"
    FAILED = "failed"            # it raised when it fired and was set aside


def _json(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, StrEnum):
        return v.value
    if isinstance(v, Mapping):
        return {str(k): _json(x) for k, x in v.items()}
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, (list, tuple, frozenset, set)):
        items = sorted(v) if isinstance(v, (frozenset, set)) else v
        return [_json(x) for x in items]
    return v


@dataclass(frozen=True, slots=True)
class Actor:
    """Who sends a command: an id, the roles held, and the unit they belong to."""

    id: str
    roles: frozenset[str] = frozenset()
    unit: str | None = None

    @classmethod
    def parse(cls, actor: Actor | str) -> Actor:
        """Accept an :class:`Actor` or the short form ``"role[,role]:id[@unit]"``."""
        if isinstance(actor, Actor):
            return actor
        return _parse_actor(actor)

    @classmethod
    def _from_text(cls, actor: str) -> Actor:
        if not isinstance(actor, str) or ":" not in actor:
            raise ValueError(f"actor must be an Actor or 'role:id', got {actor!r}")
        roles, _, rest = actor.partition(":")
        ident, _, unit = rest.partition("@")
        if not ident:
            raise ValueError(f"actor {actor!r} has no id")
        return cls(ident, frozenset(r for r in roles.split(",") if r), unit or None)

    def __str__(self) -> str:
        return f"{','.join(sorted(self.roles))}:{self.id}" + (f"@{self.unit}" if self.unit else "")


@lru_cache(maxsize=4096)
def _parse_actor(text: str) -> Actor:
    return Actor._from_text(text)


@dataclass(frozen=True, slots=True)
class Case:
    """A case as stored after a command.

    Attributes:
        id: the case id (a time-ordered UUIDv7 in hex unless the host gave one).
        workflow, version: the workflow and the version the case runs on.
        state: the current leaf state, as a dotted path (``handling.investigating``).
        data: the case's fields (personal ones included: see :meth:`masked`).
        row_version: bumped by every command; pass it as ``expected_version`` (an HTTP
            ETag) to refuse a write on a case that moved on since it was read.
        escalation_level: how many rungs of the escalation ladder the case has climbed.
        opened_at, updated_at: aware UTC instants.
        final: the state is final (the case is closed).
        at_risk: an early-warning rule flagged the case.
        overdue_since: when its first breached deadline was due, while it is overdue.
        clocks: the case's deadline clocks by name (status, due, elapsed times).
    """

    id: str
    workflow: str
    version: str
    state: str
    data: Mapping[str, Any]
    row_version: int
    escalation_level: int
    opened_at: datetime
    updated_at: datetime
    final: bool = False
    at_risk: bool = False
    overdue_since: datetime | None = None
    clocks: Mapping[str, Any] = field(default_factory=dict)

    def masked(self, pii: frozenset[str] | set[str]) -> Case:
        """The case with the values of the ``pii`` fields replaced by ``***``
        (``engine.workflow(case.workflow).pii`` names them; ``engine.get_case(id, masked=True)``
        does it for you)."""
        return _replace_data(self, {k: (MASK if k in pii and v not in (None, "") else v)
                                    for k, v in self.data.items()})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (datetimes as ISO 8601 strings)."""
        return {f: _json(getattr(self, f)) for f in self.__dataclass_fields__}


def _replace_data(case: Case, data: Mapping[str, Any]) -> Case:
    from dataclasses import replace

    return replace(case, data=data)


@dataclass(frozen=True, slots=True)
class Event:
    """One step of a case's history.

    Attributes:
        case_id, seq: the case and the event's number in its history (1 is the opening).
        kind: what the event records (:class:`EventKind`).
        name: the trigger, activity, rung or timer that caused it.
        from_state, to_state: the state before and after (equal when nothing moved).
        actor, role: who did it and with which role (``scheduler``/``system`` for timers).
        at: when, an aware UTC instant.
        changes: the case fields the event set.
        details: what else it recorded (an activity's fields, a deadline's due, a rung).
        idempotency_key: the key the command was sent with, if any.
        hash: the event's link in the case's tamper-evident chain.
    """

    case_id: str
    seq: int
    kind: EventKind
    name: str
    from_state: str | None
    to_state: str | None
    actor: str | None
    role: str | None
    at: datetime
    changes: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    hash: str = ""

    def masked(self, pii: frozenset[str] | set[str]) -> Event:
        """The event with the values of ``pii`` fields in its changes and details masked."""
        from dataclasses import replace

        def mask(m: Mapping[str, Any]) -> dict[str, Any]:
            return {k: (MASK if k in pii and v not in (None, "") else v) for k, v in m.items()}

        return replace(self, changes=mask(self.changes), details=mask(self.details))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (datetimes as ISO 8601 strings)."""
        return {f: _json(getattr(self, f)) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class TriggerOption:
    """What an actor may do on a case now, or why not.

    Attributes:
        name: the trigger or activity.
        kind: ``"transition"`` or ``"activity"``.
        allowed: whether the actor may send it now (input still to be checked).
        reason: why not, naming the rule that refuses (``[role] ...``); None when allowed.
        requires: the input fields the command must carry.
        window: the window the step must be taken in, if any; ``window_closes``: when it
            closes (aware UTC).
    """

    name: str
    kind: str
    allowed: bool
    reason: str | None = None
    requires: tuple[str, ...] = ()
    window: str | None = None
    window_closes: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {f: _json(getattr(self, f)) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class Deadline:
    """Where one of a case's deadline clocks stands.

    Attributes:
        name: the deadline.
        status: ``running``, ``paused`` or ``stopped``.
        counting: ``statutory`` or ``exact``; ``calendar``: the calendar it counts on (the
            one it was started with); ``calendar_data``: what that calendar's days came from.
        started: when the clock started; ``due``: when it is breached (None while paused).
        business_elapsed: working time elapsed on its calendar (pauses not counted).
        actual_elapsed: time elapsed since it started, pauses included.
        time_left: until it is due (None unless running; negative once overdue).
        allowed: the business time it allows (extensions included).
        breaches: how many times it was breached.
        provisional: counted in part on a guess (a year the calendar did not know).
        paused: the stretches it was paused, ``(from, to)`` (``to`` None while paused).
    """

    name: str
    status: str
    counting: str
    calendar: str
    calendar_data: str | None
    started: datetime
    due: datetime | None
    business_elapsed: timedelta
    actual_elapsed: timedelta
    time_left: timedelta | None
    allowed: timedelta
    breaches: int
    provisional: bool
    paused: tuple[tuple[datetime, datetime | None], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (times as ISO 8601, durations in seconds)."""
        out: dict[str, Any] = {}
        for f in self.__dataclass_fields__:
            v = getattr(self, f)
            out[f] = v.total_seconds() if isinstance(v, timedelta) else _json(v)
        return out


@dataclass(frozen=True, slots=True)
class Timer:
    """One instant a case (or a cron cycle) is waiting for.

    Attributes:
        id: the timer row (a deadline's warnings and breach share one row, so one id).
        case_id: the case, or None for a cron cycle across all cases.
        workflow: the workflow it belongs to.
        kind: what it does when due (:class:`TimerKind`).
        name: the deadline or cycle.
        state: the state it belongs to, if any.
        due_at: when it falls due, an aware UTC instant.
        status: :class:`TimerStatus`.
        details: what it carries (a warning's share, the deadline's due instant).
    """

    id: int
    case_id: str | None
    workflow: str
    kind: TimerKind
    name: str
    state: str | None
    due_at: datetime
    status: TimerStatus
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (datetimes as ISO 8601 strings)."""
        return {f: _json(getattr(self, f)) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What a named Python guard or action registered by a host receives."""

    case_id: str | None
    workflow: str
    state: str
    data: Mapping[str, Any]
    input: Mapping[str, Any]
    actor: Actor
    now: datetime
