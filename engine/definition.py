"""The workflow definition language: frozen pydantic models of a YAML file.

A definition holds typed case fields (with ``pii`` marks), roles, nested
states, transitions, activities and how a case is opened. Structural rules
(unknown states, unreachable states, dead ends, guards that do not compile)
are checked in :mod:`engine.checks`; this module only describes the shape.
:func:`definition_schema` gives it as a JSON Schema, for editors.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)


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
    """A typed field; ``pii`` fields are masked in logs and in ``show``.

    ``max_length`` (string, text), ``minimum`` / ``maximum`` (int, number) and
    ``max_items`` (list) tighten the workflow's ``limits`` for this field. ``label`` is
    the name shown to people (``label: 渠道``); ``value_labels`` names an enum's choices
    (``{visit: 來訪}``), each key one of ``values``.
    """

    type: FieldType = FieldType.STRING
    pii: bool = False
    values: tuple[str, ...] = ()
    description: str = ""
    label: str = ""
    value_labels: dict[str, str] = Field(default_factory=dict)
    max_length: int | None = Field(default=None, ge=1)
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = Field(default=None, ge=0)

    @field_validator("values")
    @classmethod
    def _values_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("enum values must be unique")
        return v

    @model_validator(mode="after")
    def _labels_name_values(self) -> FieldSpec:
        unknown = sorted(set(self.value_labels) - set(self.values))
        if unknown:
            raise ValueError(f"value_labels names {', '.join(map(repr, unknown))}, not among the "
                             f"field's values {list(self.values)}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Without value labels a field dumps as before they existed, so a definition that
        # gives none keeps its content version.
        out = handler(self)
        if isinstance(out, dict) and not out.get("value_labels"):
            out.pop("value_labels", None)
        return out


class StateSpec(_Frozen):
    """A state; a state with ``states`` is compound and enters its ``initial`` child."""

    description: str = ""
    label: str = ""
    final: bool = False
    initial: str | None = None
    states: dict[str, StateSpec] = Field(default_factory=dict)


def _as_tuple(v: Any) -> Any:
    if isinstance(v, str):
        return (v,)
    return v


_NAMES_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
# One name or a list of names: ``source: registered`` or ``source: [registered, accepted]``.
Names = Annotated[tuple[str, ...], BeforeValidator(_as_tuple), WithJsonSchema(_NAMES_SCHEMA)]


class TransitionSpec(_Frozen):
    """One transition: a trigger from one or more sources to a destination.

    Its input may carry only the fields it names in ``required`` and ``optional``, so a
    command can never overwrite a field that a guard relies on (``leader``, ``satisfaction``).
    """

    trigger: str
    source: Names
    dest: str
    description: str = ""
    roles: Names = ()
    required: Names = ()
    optional: Names = ()
    guard: str | None = None
    conditions: Names = ()
    set: dict[str, Any] = Field(default_factory=dict)
    actions: Names = ()
    while_open: str | None = None     # a window that must be open (e.g. the review request)
    after_closed: str | None = None   # a window that must have closed
    scope: Names = ()                 # who of the case may take it (see AssignmentSpec)
    label: str = ""


class ActivitySpec(_Frozen):
    """Something recorded on a case without changing its state (a home visit, a meeting)."""

    description: str = ""
    states: Names = ()
    roles: Names = ()
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    required: Names = ()
    guard: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    while_open: str | None = None
    after_closed: str | None = None
    scope: Names = ()
    label: str = ""


class OpenSpec(_Frozen):
    """Who may open a case, what it must carry (``required``), what else it may carry
    (``optional``: nothing beyond these two lists is accepted, so a new case cannot bring
    fields that later steps set), and what is set on it."""

    roles: Names = ()
    required: Names = ()
    optional: Names = ()
    set: dict[str, Any] = Field(default_factory=dict)


def _percent(v: Any) -> Any:
    if isinstance(v, str) and v.strip().endswith("%"):
        return float(v.strip()[:-1]) / 100
    return v


_SHARE_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"}]}
# Warning thresholds: shares of the allowed time, one or a list, ``0.5`` or ``50%``.
Shares = Annotated[tuple[float, ...], WithJsonSchema(
    {"anyOf": [_SHARE_SCHEMA, {"type": "array", "items": _SHARE_SCHEMA}]})]


class ExtendSpec(_Frozen):
    """A transition that moves a deadline: by the number of days in one of its input fields."""

    trigger: str
    days_field: str


class BreachSpec(_Frozen):
    """What a breached deadline does: climb the escalation ladder and/or fire a trigger."""

    escalate: bool = True
    trigger: str | None = None
    repeat: str | None = None  # climb one more rung each time this much more time has passed


class Counting(StrEnum):
    """How a period is counted.

    ``statutory``: as the law counts a period in days (the start day not counted, the last
    day ending at 24:00 or the office's closing time, a last day of rest moved to the next
    working day on the official calendar); a period in hours runs from the instant.
    ``exact``: a duration from the instant (days as 24-hour units on the calendar).
    """

    STATUTORY = "statutory"
    EXACT = "exact"


class DeadlineSpec(_Frozen):
    """An SLA clock: when it starts, stops and pauses; how long it allows; its warnings.

    Either ``state`` (runs while the case is in that state, cancelled when it leaves) or
    ``start`` (a trigger, or ``open``) with ``stop`` (states whose entry stops it; a final
    state always stops it). ``counting`` overrides the workflow's.
    """

    description: str = ""
    counting: Counting | None = None
    state: str | None = None
    start: str | None = None
    stop: Names = ()
    within: str
    warn: Shares = (0.5, 0.8)
    pause_in: Names = ()
    extend: ExtendSpec | None = None
    breach: BreachSpec = Field(default_factory=BreachSpec)

    @field_validator("warn", mode="before")
    @classmethod
    def _warn(cls, v: Any) -> Any:
        v = _as_tuple(v) if not isinstance(v, (list, tuple)) else v
        return tuple(_percent(x) for x in v)

    @field_validator("warn")
    @classmethod
    def _warn_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        for x in v:
            if not 0 < x < 1:
                raise ValueError(f"warning thresholds must lie between 0% and 100%, not {x:.0%}")
        return tuple(sorted(v))


class WindowSpec(_Frozen):
    """A period in which something may be done (e.g. 30 days to ask for a review after the
    reply): it opens when ``opens_on`` (a trigger) is applied, or at the instant held in
    ``from_field`` (a datetime field), and stays open ``within``, counted as the deadlines
    are. A transition or activity names it in ``while_open`` or ``after_closed``."""

    description: str = ""
    opens_on: str | None = None
    from_field: str | None = None
    within: str
    counting: Counting | None = None


class RungSpec(_Frozen):
    """One rung of the escalation ladder."""

    name: str
    description: str = ""


class CycleSpec(_Frozen):
    """A recurring cycle: every N days while a case is in a state, or cron across all cases.

    A per-case cycle records a ``cycle`` event each time it comes round. A cron cycle
    either builds a ``report`` (the supervision report of every unit's open and overdue
    cases) or ``check``s the matching open cases (``overdue``, ``at_risk`` or ``open``),
    optionally only between two dates or only inside sensitive periods.
    """

    description: str = ""
    every: str | None = None
    while_in: Names = ()
    cron: str | None = None
    report: str | None = None
    check: str | None = None
    between: tuple[str, str] | None = None
    sensitive_only: bool = False


class SlotKind(StrEnum):
    """What an assignment slot holds: one person (an actor id), one unit, or several units."""

    PERSON = "person"
    UNIT = "unit"
    UNITS = "units"


class SlotSpec(_Frozen):
    """An assignment slot of a case, kept in one of its fields (``field``, by default the
    slot's own name), so guards read it as any field."""

    kind: SlotKind = SlotKind.PERSON
    field: str | None = None
    lead: bool = False  # the case's lead unit (a unit slot): the unit its worklists file it under
    description: str = ""
    label: str = ""


class AssignmentSpec(_Frozen):
    """Who holds a case (包案到人): its slots, and who may assign, reassign and delegate.

    A step's ``scope`` names who of the case may take it, beside its roles: a slot name (the
    person in that slot, or who stands in for them), ``unit`` (an actor of the lead unit),
    ``assisting`` (an actor of one of the assisting units: a ``units`` slot), or
    ``role:NAME`` (an actor holding that role, whichever case it is, e.g. supervisors).
    """

    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    roles: Names = ()            # who may assign, reassign and delegate
    reason_required: bool = True  # a reassignment (a slot already held) needs a reason


class RiskSpec(_Frozen):
    """Early-warning rules; ``identity`` names the field that identifies the petitioner."""

    identity: str | None = None
    rules: dict[str, str] = Field(default_factory=dict)


class FigureSpec(_Frozen):
    """One figure of a workflow's report, computed by SQL from the cases and events.

    ``count``: ``cases`` (opened in the period), ``events`` (in the period; ``name`` and
    ``kind`` filter them), ``open`` (open at the period's end), ``closed`` (closed in the
    period, optionally in ``state``), ``overdue`` (open and overdue at the end);
    ``sum``: a numeric field of the events' details (an activity's field);
    ``ratio``: two other figures. ``where`` filters the cases by their fields; ``without``
    keeps only cases that have no event of those names (e.g. closed with no review asked).
    """

    label: str = ""
    count: str | None = None
    sum: str | None = None
    ratio: tuple[str, str] | None = None
    name: Names = ()
    kind: Names = ()
    state: Names = ()
    without: Names = ()
    where: dict[str, Any] = Field(default_factory=dict)


class ReportSpec(_Frozen):
    """What a workflow reports: its figures, the fields it can be broken down by, and
    named groups of a field's values (e.g. ``source``: handed_down = central, province, city)."""

    by: Names = ()
    groups: dict[str, dict[str, tuple[str, ...]]] = Field(default_factory=dict)
    figures: dict[str, FigureSpec] = Field(default_factory=dict)


SAFE_INTEGER = 2**53 - 1  # the largest integer every JSON reader keeps exactly


class LimitsSpec(_Frozen):
    """Bounds on every value a command may bring (a value past one is refused, naming the
    field, before anything is written). The defaults suit a case file; a field may
    tighten them (``max_length``, ``minimum``, ``maximum``, ``max_items``)."""

    string_length: int = Field(default=1_000, ge=1, le=10_000_000)
    text_length: int = Field(default=100_000, ge=1, le=10_000_000)
    list_items: int = Field(default=1_000, ge=0, le=1_000_000)
    depth: int = Field(default=8, ge=1, le=64)          # lists and objects inside a list field
    value_bytes: int = Field(default=1_000_000, ge=1, le=100_000_000)  # a list field as JSON
    integer_min: int = Field(default=-SAFE_INTEGER, ge=-(2**63 - 1))
    integer_max: int = Field(default=SAFE_INTEGER, le=2**63 - 1)


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
    calendar: str = "calendar"
    timezone: str = "Asia/Shanghai"
    counting: Counting = Counting.EXACT
    deadlines: dict[str, DeadlineSpec] = Field(default_factory=dict)
    windows: dict[str, WindowSpec] = Field(default_factory=dict)
    escalation: tuple[RungSpec, ...] = ()
    cycles: dict[str, CycleSpec] = Field(default_factory=dict)
    risk: RiskSpec = Field(default_factory=RiskSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    assignment: AssignmentSpec = Field(default_factory=AssignmentSpec)
    search: Names = ()           # fields a case search may filter on (never pii ones)
    summary: Names = ()          # fields a case summary (search and worklist rows) carries


SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def _draft7(node: Any) -> Any:
    """Pydantic's JSON Schema (2020-12) in draft 7, the dialect yaml-language-server reads."""
    if isinstance(node, list):
        return [_draft7(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft7(v) for k, v in node.items()}
    if "prefixItems" in out:  # a fixed-length tuple
        out["items"] = out.pop("prefixItems")
        out["additionalItems"] = False
    if "$defs" in out:
        out["definitions"] = out.pop("$defs")
    return out


def definition_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow definition file, for editors that validate and
    complete YAML as it is typed (``casework schema``)."""
    schema = WorkflowSpec.model_json_schema(ref_template="#/definitions/{model}")
    schema.pop("title", None)
    return {"$schema": SCHEMA_DIALECT, "title": "casework workflow definition", **_draft7(schema)}
