"""The value objects of the public API: actors, cases, events, options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any


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
    """A case as stored after a command."""

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


@dataclass(frozen=True, slots=True)
class Event:
    """One step of a case's history."""

    case_id: str
    seq: int
    kind: str
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


@dataclass(frozen=True, slots=True)
class TriggerOption:
    """What an actor may do on a case now, or why not."""

    name: str
    kind: str  # "transition" or "activity"
    allowed: bool
    reason: str | None = None
    requires: tuple[str, ...] = ()


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
