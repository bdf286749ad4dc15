"""A loaded workflow version as a host sees it: its states, triggers, fields and rules.

The engine compiles each definition into an internal machine; hosts, the command
line and the pictures get this description instead: what the definition declares,
the calendar in effect (a setting may override the definition's), and the names of
its personal (``pii``) fields, with a helper to mask them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from .definition import FieldSpec, WorkflowSpec
from .types import MASK


@dataclass(frozen=True)
class Workflow:
    """One version of a workflow.

    Attributes:
        name, version: the workflow's name and its content version.
        title: the definition's title.
        definition: the parsed definition (a frozen pydantic model of the YAML).
        states: every leaf state, as dotted paths, in definition order.
        initial: the leaf a new case starts in.
        final_states: the leaves that close a case.
        triggers: every transition trigger; ``activities``: every activity name.
        roles: the roles the definition declares.
        fields: the case fields by name; ``pii``: the personal ones.
        timezone: the zone its dates are counted in; ``calendar``: the calendar in effect.
        source: the file (or stored copy) it was loaded from.
    """

    name: str
    version: str
    title: str
    definition: WorkflowSpec
    states: tuple[str, ...]
    initial: str
    final_states: frozenset[str]
    triggers: tuple[str, ...]
    activities: tuple[str, ...]
    roles: tuple[str, ...]
    fields: Mapping[str, FieldSpec]
    pii: frozenset[str]
    timezone: str
    calendar: str
    source: str

    @property
    def tz(self) -> ZoneInfo:
        """The workflow's time zone."""
        return ZoneInfo(self.timezone)

    def mask(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``data`` with the values of personal fields replaced by ``***``."""
        return {k: (MASK if k in self.pii and v not in (None, "") else v) for k, v in data.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the definition itself as its JSON form)."""
        return {
            "name": self.name, "version": self.version, "title": self.title,
            "states": list(self.states), "initial": self.initial,
            "final_states": sorted(self.final_states), "triggers": list(self.triggers),
            "activities": list(self.activities), "roles": list(self.roles),
            "pii": sorted(self.pii), "timezone": self.timezone, "calendar": self.calendar,
            "definition": self.definition.model_dump(mode="json"),
        }
