"""A workflow definition compiled once into a shared ``transitions`` machine.

One :class:`CompiledWorkflow` exists per workflow version and serves every
case: the machine holds the leaf states (nested states flattened to dotted
paths) and the transitions, with one condition per transition that checks
roles, required input, the guard expression and any named host guards. A
command builds a throw-away probe object holding the case's state and asks
the machine's event to move it; nothing is registered per case or per call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Any, Protocol

from transitions import Machine, MachineError

from .assignment import slots_of
from .calendars import DeclaredYear
from .checks import RISK_NAMES
from .definition import ActivitySpec, TransitionSpec, WorkflowSpec
from .errors import CommandRefused, DefinitionError, InvalidTrigger, Problem, WrongState
from .expressions import Expression, compile_expression
from .fields import Validator
from .loader import LoadedDefinition
from .statetree import StateTree
from .timers import SensitivePeriod, Timing
from .types import GuardContext
from .workflow import Workflow

NamedGuard = Callable[[GuardContext], bool]
NamedAction = Callable[[GuardContext], Mapping[str, Any] | None]


Value = Expression | Any


def _compile_set(values: Mapping[str, Any], fields: set[str],
                 funcs: Mapping[str, Callable[..., Any]]) -> dict[str, Value]:
    return {k: compile_expression(v, fields=fields, functions=funcs) if isinstance(v, str) else v
            for k, v in values.items()}


@dataclass(frozen=True)
class CompiledTransition:
    """A transition with its guard and values compiled."""

    spec: TransitionSpec
    roles: frozenset[str]
    guard: Expression | None
    conditions: tuple[tuple[str, NamedGuard], ...]
    sets: Mapping[str, Value]
    actions: tuple[tuple[str, NamedAction], ...]


@dataclass(frozen=True)
class CompiledActivity:
    """An activity with its guard, validator and values compiled."""

    name: str
    spec: ActivitySpec
    roles: frozenset[str]
    leaves: frozenset[str]
    guard: Expression | None
    sets: Mapping[str, Value]
    validate: Validator


@dataclass(frozen=True)
class TimingOptions:
    """Settings that shape a workflow's clocks: calendar overrides, strictness, sensitive
    periods, the years an operator declared, and the office's closing time per workflow."""

    calendars: Mapping[str, str] = field(default_factory=dict)
    strict_calendar: bool = False
    sensitive: tuple[SensitivePeriod, ...] = ()
    declared: Mapping[int, DeclaredYear] = field(default_factory=dict)
    closing: Mapping[str, time] = field(default_factory=dict)


class Admission(Protocol):
    """What the machine's conditions ask whether a candidate transition admits a command
    (:class:`casework.rules.Attempt`)."""

    def admit(self, ct: CompiledTransition, ctx_factory: Callable[[], GuardContext]) -> bool: ...

    def best_refusal(self) -> CommandRefused: ...


class _Probe:
    """Stand-in model handed to the shared machine for one command."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class CompiledWorkflow:
    """One workflow version, compiled for the engine. Immutable and shared by threads."""

    def __init__(self, loaded: LoadedDefinition, *,
                 guards: Mapping[str, NamedGuard] | None = None,
                 actions: Mapping[str, NamedAction] | None = None,
                 functions: Mapping[str, Callable[..., Any]] | None = None,
                 timing: TimingOptions | None = None) -> None:
        spec = loaded.spec
        self.spec: WorkflowSpec = spec
        self.name = spec.workflow
        self.version = loaded.version
        self.source = loaded.source
        self._description: Workflow | None = None
        self.tree = StateTree.of(spec)
        self.fields = dict(spec.fields)
        self.pii = frozenset(k for k, v in spec.fields.items() if v.pii)
        self.validate = Validator(f"{self.name}_fields", spec.fields, spec.limits)
        self.defaults: dict[str, Any] = dict.fromkeys(spec.fields)
        funcs = dict(functions or {})
        guards = guards or {}
        actions = actions or {}
        problems: list[Problem] = []
        fieldset = set(spec.fields)

        def named(kind: str, table: Mapping[str, Any], names: tuple[str, ...], where: str) -> Any:
            out = []
            for n in names:
                if n not in table:
                    problems.append(Problem(loaded.source, None,
                                            f"{where}: no {kind} named {n!r} is registered"))
                else:
                    out.append((n, table[n]))
            return tuple(out)

        self.initial = self.tree.entry_leaf(spec.initial) or spec.initial
        self.open_sets = _compile_set(spec.open.set, fieldset, funcs)
        self.open_roles = frozenset(spec.open.roles)
        self.slots = slots_of(spec)
        self.open_inputs = frozenset(spec.open.required) | frozenset(spec.open.optional)
        self.transitions: list[CompiledTransition] = []
        self._machine = Machine(model=None, states=list(self.tree.leaves), initial=self.initial,
                                auto_transitions=False, send_event=True,
                                ignore_invalid_triggers=False)
        for t in spec.transitions:
            where = f"transition {t.trigger!r}"
            ct = CompiledTransition(
                spec=t, roles=frozenset(t.roles),
                guard=compile_expression(t.guard, fields=fieldset, functions=funcs) if t.guard else None,
                conditions=named("guard", guards, t.conditions, where),
                sets=_compile_set(t.set, fieldset, funcs),
                actions=named("action", actions, t.actions, where),
            )
            self.transitions.append(ct)
            dest = self.tree.entry_leaf(t.dest)
            for s in t.source:
                for leaf in self.tree.leaves_under(s):
                    self._machine.add_transition(t.trigger, leaf, dest, conditions=[self._condition(ct)])
        self.activities: dict[str, CompiledActivity] = {}
        for name, a in spec.activities.items():
            names = fieldset | set(a.fields)
            leaves = ([lf for s in a.states for lf in self.tree.leaves_under(s)] if a.states
                      else [lf for lf in self.tree.leaves if not self.tree.is_final(lf)])
            self.activities[name] = CompiledActivity(
                name=name, spec=a, roles=frozenset(a.roles), leaves=frozenset(leaves),
                guard=compile_expression(a.guard, fields=names, functions=funcs) if a.guard else None,
                sets=_compile_set(a.set, names, funcs),
                validate=Validator(f"{self.name}_{name}", a.fields, spec.limits),
            )
        if problems:
            raise DefinitionError(problems)
        opts = timing or TimingOptions()
        self.timing = Timing(spec, self.tree, calendar=opts.calendars.get(self.name),
                             declared=opts.declared, closing=opts.closing.get(self.name),
                             strict_calendar=opts.strict_calendar, sensitive=opts.sensitive)
        self.risk_identity = spec.risk.identity
        self.risk_rules = {n: compile_expression(e, fields=fieldset | RISK_NAMES, functions=funcs)
                           for n, e in spec.risk.rules.items()}
        self.risk_needs_party = any(r.names & RISK_NAMES for r in self.risk_rules.values())
        # The fields whose change can change a rule's verdict; other commands skip the rules.
        self.risk_fields = frozenset(
            {n for r in self.risk_rules.values() for n in r.names} - RISK_NAMES
            | ({self.risk_identity} if self.risk_identity else set()))
        self.finals = frozenset(lf for lf in self.tree.leaves if self.tree.is_final(lf))
        inputs: dict[str, set[str]] = {}
        for t in spec.transitions:
            inputs.setdefault(t.trigger, set()).update(t.required, t.optional)
        self.inputs_by_trigger = {k: frozenset(v) for k, v in inputs.items()}
        self._table = self._table_of()
        self._triggers_by_leaf: dict[str, tuple[str, ...]] = {
            leaf: tuple(self._machine.get_triggers(leaf)) for leaf in self.tree.leaves
        }

    @staticmethod
    def _condition(ct: CompiledTransition) -> Callable[[Any], bool]:
        def check(event_data: Any) -> bool:
            attempt: Admission = event_data.kwargs["attempt"]
            return attempt.admit(ct, event_data.kwargs["ctx_factory"])
        check.compiled = ct  # type: ignore[attr-defined]
        return check

    def describe(self) -> Workflow:
        """The public description of this version."""
        d = self._description
        if d is None:
            spec = self.spec
            d = self._description = Workflow(
                name=self.name, version=self.version, title=spec.title, definition=spec,
                states=self.tree.leaves, initial=self.initial, final_states=self.finals,
                triggers=tuple(dict.fromkeys(t.trigger for t in spec.transitions)),
                activities=tuple(spec.activities), roles=spec.roles, fields=self.fields,
                pii=self.pii, timezone=spec.timezone, calendar=self.timing.calendar.name,
                source=self.source)
        return d

    # -- queries ---------------------------------------------------------
    def is_final(self, state: str) -> bool:
        return state in self.tree and self.tree.is_final(state)

    def triggers_from(self, state: str) -> tuple[str, ...]:
        return self._triggers_by_leaf.get(state, ())

    def activities_in(self, state: str) -> list[CompiledActivity]:
        return [a for a in self.activities.values() if state in a.leaves]

    # -- the command -----------------------------------------------------
    def candidates(self, state: str, trigger: str) -> tuple[tuple[CompiledTransition, str], ...]:
        """The transitions ``trigger`` may take from ``state``, in the machine's order, each
        with the leaf it leads to; the first that admits a command wins, as in
        ``transitions``' own dispatch (read once per version, :meth:`_table_of`)."""
        found = self._table.get((state, trigger))
        if found is None:
            ev = self._machine.events.get(trigger)
            if ev is None:
                raise InvalidTrigger(f"workflow {self.name!r} has no trigger {trigger!r}")
            raise WrongState(f"{trigger!r} is allowed only from {sorted(ev.transitions)}")
        return found

    def fire_on_machine(self, state: str, trigger: str, attempt: Admission,
                        ctx_factory: Callable[[], GuardContext]) -> str:
        """The same decision through ``transitions``' own event dispatch on a probe object
        (slower; kept to check that :meth:`resolve` and the library agree)."""
        probe = _Probe(state)
        try:
            ok = self._machine.events[trigger].trigger(probe, attempt=attempt,
                                                       ctx_factory=ctx_factory)
        except (MachineError, KeyError):
            raise WrongState(f"{trigger!r} is not allowed from {state!r}") from None
        if not ok:
            raise attempt.best_refusal()
        return probe.state

    def _table_of(self) -> dict[tuple[str, str], tuple[tuple[CompiledTransition, str], ...]]:
        """(leaf state, trigger) -> the candidate transitions in the machine, in order."""
        table: dict[tuple[str, str], tuple[tuple[CompiledTransition, str], ...]] = {}
        for trigger, ev in self._machine.events.items():
            for source, transitions in ev.transitions.items():
                table[(source, trigger)] = tuple(
                    (t.conditions[0].func.compiled, str(t.dest))  # type: ignore[union-attr]
                    for t in transitions)
        return table
