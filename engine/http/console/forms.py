"""Forms generated from a definition: each step's declared input as inputs, and back.

A transition's input is its ``required`` and ``optional`` fields (the case's fields); an
activity's is its own ``fields``; opening a case takes ``open.required`` and
``open.optional``. Each becomes an input by its type: text, a text area, a number (whole or
not), yes/no, a date, a date and time (in the workflow's zone), a choice among an enum's
values (by their labels) or a list (one item a line), with its label, a required mark and
the field's ``description`` as help. What comes back is typed the same way; an empty input
is left out, so that a missing required field is refused by the engine, naming it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ...definition import FieldSpec, FieldType, WorkflowSpec
from ...views.labels import Labels

__all__ = ["Input", "field_input", "opening_inputs", "parse", "step_inputs"]

PREFIX = "f."  # form names of the inputs: f.<field>


@dataclass(frozen=True)
class Input:
    """One input of a generated form."""

    name: str
    label: str
    kind: str                  # the field type (string, text, int, ..., enum, list)
    required: bool
    help: str
    choices: tuple[tuple[str, str], ...] = ()   # (value, label) of an enum, or yes/no
    pii: bool = False

    @property
    def form_name(self) -> str:
        return PREFIX + self.name

    @property
    def widget(self) -> str:
        return {"text": "textarea", "list": "textarea", "enum": "select", "bool": "select",
                "int": "number", "number": "number", "date": "date",
                "datetime": "datetime-local"}.get(self.kind, "text")

    @property
    def step(self) -> str:
        return "1" if self.kind == "int" else "any"


def field_input(name: str, spec: FieldSpec | None, required: bool, labels: Labels,
           activity: str | None = None) -> Input:
    kind = spec.type.value if spec is not None else "string"
    choices: tuple[tuple[str, str], ...] = ()
    if spec is not None and spec.type is FieldType.ENUM:
        choices = tuple((v, spec.value_labels.get(v, v)) for v in spec.values)
    elif kind == "bool":
        choices = (("true", "是 yes"), ("false", "否 no"))
    help_text = spec.description if spec is not None else ""
    if kind == "list":
        help_text = (help_text + "; " if help_text else "") + "one a line (每行一项)"
    return Input(name, labels.field(name, activity), kind, required, help_text, choices,
                 bool(spec is not None and spec.pii))


def _covers(source: str, state: str) -> bool:
    return state == source or state.startswith(source + ".")


def step_inputs(spec: WorkflowSpec, kind: str, name: str, state: str) -> list[Input]:
    """The inputs of a transition (from ``state``) or an activity."""
    labels = Labels(spec)
    if kind == "activity":
        act = spec.activities.get(name)
        if act is None:
            return []
        required = set(act.required)
        ordered = [*act.required, *(f for f in act.fields if f not in required)]
        return [field_input(f, act.fields.get(f) or spec.fields.get(f), f in required, labels, name)
                for f in ordered]
    same = [t for t in spec.transitions if t.trigger == name]
    here = [t for t in same if any(_covers(s, state) for s in t.source)] or same
    if not here:
        return []
    t = here[0]
    needed = list(t.required)
    optional = [f for f in t.optional if f not in needed]
    return [field_input(f, spec.fields.get(f), True, labels) for f in needed] + [
        field_input(f, spec.fields.get(f), False, labels) for f in optional]


def opening_inputs(spec: WorkflowSpec) -> list[Input]:
    """The inputs of opening a case."""
    labels = Labels(spec)
    required = list(spec.open.required)
    optional = [f for f in spec.open.optional if f not in required]
    return [field_input(f, spec.fields.get(f), True, labels) for f in required] + [
        field_input(f, spec.fields.get(f), False, labels) for f in optional]


def _value(inp: Input, text: str, tz: ZoneInfo) -> Any:
    text = text.strip() if inp.kind not in ("text",) else text.strip("\r\n")
    if inp.kind == "int":
        with contextlib.suppress(ValueError):
            return int(text)
        return text  # the engine refuses it, naming the field
    if inp.kind == "number":
        with contextlib.suppress(ValueError):
            n = float(text)
            if math.isfinite(n):
                return n
        return text
    if inp.kind == "bool":
        return {"true": True, "false": False}.get(text.lower(), text)
    if inp.kind == "list":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if inp.kind == "datetime":
        with contextlib.suppress(ValueError):
            d = datetime.fromisoformat(text)
            if d.tzinfo is None:
                d = d.replace(tzinfo=tz)
            return d.isoformat()
        return text
    return text


def parse(inputs: Sequence[Input], form: Mapping[str, str], tz: ZoneInfo) -> dict[str, Any]:
    """The command's data from a posted form: each filled input typed by its field."""
    data: dict[str, Any] = {}
    for inp in inputs:
        raw = form.get(inp.form_name)
        if raw is None or not raw.strip():
            continue
        value = _value(inp, raw, tz)
        if value == [] or value == "":
            continue
        data[inp.name] = value
    return data
