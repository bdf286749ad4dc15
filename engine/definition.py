"""The workflow definition language: frozen pydantic models of a YAML file.

A definition holds typed case fields (with ``pii`` marks), roles, nested
states, transitions, activities and how a case is opened. Structural rules
(unknown states, unreachable states, dead ends, guards that do not compile)
are checked in :mod:`engine.checks`; this module only describes the shape.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldType(StrEnum):
    """The types a case or activity field may have."""

    STRING = "string"
    TEXT = "text"
    INT = "int"
    NUMBER = "number"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    ENUM = "enum"
    LIST = "list"


class FieldSpec(_Frozen):
    """A typed field; ``pii`` fields are masked in logs and in ``show``."""

    type: FieldType = FieldType.STRING
    pii: bool = False
    values: tuple[str, ...] = ()
    description: str = ""

    @field_validator("values")
    @classmethod
    def _values_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("enum values must be unique")
        return v


class StateSpec(_Frozen):
    """A state; a state with ``states`` is compound and enters its ``initial`` child."""

    description: str = ""
    final: bool = False
    initial: str | None = None
    states: dict[str, StateSpec] = Field(default_factory=dict)


def _as_tuple(v: Any) -> Any:
    if isinstance(v, str):
        return (v,)
    return v


class TransitionSpec(_Frozen):
    """One transition: a trigger from one or more sources to a destination."""

    trigger: str
    source: tuple[str, ...]
    dest: str
    description: str = ""
    roles: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    guard: str | None = None
    conditions: tuple[str, ...] = ()
    set: dict[str, Any] = Field(default_factory=dict)
    actions: tuple[str, ...] = ()

    _src = field_validator("source", "roles", "required", "conditions", "actions", mode="before")(
        _as_tuple
    )


class ActivitySpec(_Frozen):
    """Something recorded on a case without changing its state (a home visit, a meeting)."""

    description: str = ""
    states: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    required: tuple[str, ...] = ()
    guard: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)

    _tuples = field_validator("states", "roles", "required", mode="before")(_as_tuple)


class OpenSpec(_Frozen):
    """Who may open a case, what it must carry, and what is set on it."""

    roles: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    set: dict[str, Any] = Field(default_factory=dict)

    _tuples = field_validator("roles", "required", mode="before")(_as_tuple)


class WorkflowSpec(_Frozen):
    """A whole workflow definition, as written in YAML."""

    workflow: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str = ""
    description: str = ""
    roles: tuple[str, ...] = ()
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    initial: str
    states: dict[str, StateSpec]
    open: OpenSpec = Field(default_factory=OpenSpec)
    transitions: tuple[TransitionSpec, ...] = ()
    activities: dict[str, ActivitySpec] = Field(default_factory=dict)
