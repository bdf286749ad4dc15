"""The rules: every decision to accept or refuse a command is made here.

Opening a case, firing a transition, recording an activity, and listing what an
actor may do now (:func:`options`) all run the same checks in the same order, so
what ``available_triggers`` offers is what ``fire`` accepts:

1. the trigger exists and is allowed from the case's state (:class:`WrongState`);
2. the actor holds one of the step's roles (:class:`RoleRefused`) and is one of whom its
   scope admits on this case (:class:`ScopeRefused`: the case's handler, its lead unit...);
3. the step's window is open, or has closed, as it requires (:class:`WindowClosed`);
4. the input names only fields the step takes, of the declared types
   (:class:`InvalidInput`), and carries its required fields (:class:`MissingFields`);
5. the guard expression and any named host guards hold (:class:`GuardRefused`).

A decision is computed in memory; nothing here touches the database. The caller
writes what a :class:`Decision` says, in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .assignment import describe_scope, in_scope
from .errors import (
    CommandRefused,
    GuardRefused,
    InvalidInput,
    InvalidTrigger,
    MissingFields,
    RoleRefused,
    ScopeRefused,
    WindowClosed,
    WrongState,
)
from .expressions import Expression, ExpressionError, FieldView
from .machine import CompiledActivity, CompiledTransition, CompiledWorkflow, Value
from .types import Actor, EventKind, GuardContext, TriggerOption

# How far a refused candidate got through the checks: the refusal of the candidate that
# got furthest is the one reported.
_ROLE, _SCOPE, _WINDOW, _REQUIRED, _GUARD = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class CaseAt:
    """One case at one instant, as its steps' scopes and windows see it."""

    wf: CompiledWorkflow
    data: Mapping[str, Any]
    clocks: Mapping[str, Any]
    now: datetime

    def when(self, name: str) -> tuple[datetime, datetime] | None:
        return self.wf.timing.window(name, self.data, self.clocks)

    def scope_refusal(self, scope: tuple[str, ...], actor: Actor) -> ScopeRefused | None:
        """Why ``actor`` is not one of whom ``scope`` admits on this case (None: they are)."""
        if not scope or in_scope(scope, self.wf.slots, self.data, self.clocks, actor, self.now):
            return None
        whom = describe_scope(scope, self.wf.slots, self.data)
        return ScopeRefused(f"only {whom} may do this; {actor.id}"
                            + (f" of {actor.unit}" if actor.unit else "") + " is not")

    def refusal(self, while_open: str | None, after_closed: str | None) -> WindowClosed | None:
        """Why a step bound to these windows may not be taken now (None: it may)."""
        if while_open is not None:
            span = self.when(while_open)
            if span is None:
                return WindowClosed(f"window {while_open!r} has not opened")
            opened, closes = span
            if self.now >= closes:
                return WindowClosed(f"window {while_open!r} opened {_at(opened, self.wf)} and "
                                    f"closed {_at(closes, self.wf)}")
        if after_closed is not None:
            span = self.when(after_closed)
            if span is None:
                return WindowClosed(f"window {after_closed!r} has not opened yet")
            if self.now < span[1]:
                return WindowClosed(f"window {after_closed!r} is open until {_at(span[1], self.wf)}")
        return None


def _at(when: datetime, wf: CompiledWorkflow) -> str:
    return when.astimezone(wf.timing.calendars.tz).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Decision:
    """An accepted command: what it writes."""

    kind: EventKind
    state: str                        # the state after the command
    changes: dict[str, Any]           # case fields it sets
    details: dict[str, Any] = field(default_factory=dict)  # what the event records besides
    role: str | None = None           # the role the actor acted in


def guard_names(wf: CompiledWorkflow, data: Mapping[str, Any], input: Mapping[str, Any],
                actor: Actor, now: datetime, state: str) -> dict[str, Any]:
    """The names a guard sees: fields (input over case data), input, case, actor, now, state."""
    names = {**wf.defaults, **data, **input}
    names["input"] = FieldView(input)
    names["case"] = FieldView(data)
    names["actor"] = {"id": actor.id, "roles": sorted(actor.roles), "unit": actor.unit}
    names["now"] = now.isoformat()
    names["state"] = state
    return names


def _role_used(who: Actor, allowed: frozenset[str]) -> str | None:
    pool = who.roles & allowed if allowed else who.roles
    return min(pool) if pool else None


def _missing(required: tuple[str, ...], values: Mapping[str, Any]) -> list[str]:
    return [f for f in required if values.get(f) in (None, "", [])]


def _guard_refusal(guard: Expression, names: Mapping[str, Any]) -> GuardRefused | None:
    try:
        ok = bool(guard.evaluate(names))
    except ExpressionError as e:
        return GuardRefused(f"guard could not be evaluated: {e}")
    if ok:
        return None
    part = guard.failing_part(names)
    why = f" (`{part}` does not hold)" if part else ""
    return GuardRefused(f"guard `{guard.source}` is false{why}")


def _check_step(roles: frozenset[str], required: tuple[str, ...], guard: Expression | None,
                actor: Actor, input: Mapping[str, Any], names: Mapping[str, Any],
                check_required: bool, windows: CaseAt | None = None,
                while_open: str | None = None, after_closed: str | None = None,
                scope: tuple[str, ...] = ()) -> tuple[int, CommandRefused] | None:
    """Roles, window, required input, guard: the first that refuses, with how far the step
    got."""
    if roles and not (roles & actor.roles):
        return _ROLE, RoleRefused(f"needs one of the roles {sorted(roles)}; {actor.id} has "
                                  f"{sorted(actor.roles) or 'none'}")
    if windows is not None and scope:
        outside = windows.scope_refusal(scope, actor)
        if outside is not None:
            return _SCOPE, outside
    if windows is not None and (while_open or after_closed):
        closed = windows.refusal(while_open, after_closed)
        if closed is not None:
            return _WINDOW, closed
    if check_required:
        missing = _missing(required, input)
        if missing:
            return _REQUIRED, MissingFields(f"missing required input: {', '.join(missing)}")
    if guard is not None:
        refused = _guard_refusal(guard, names)
        if refused is not None:
            return _GUARD, refused
    return None


@dataclass
class Attempt:
    """One command being matched against a trigger's candidate transitions: who, with what
    input, and why each candidate refused (the machine's conditions call :meth:`admit`)."""

    actor: Actor
    input: Mapping[str, Any]
    names: dict[str, Any]
    check_required: bool = True
    windows: CaseAt | None = None
    chosen: CompiledTransition | None = None
    refusals: list[tuple[int, CommandRefused]] = field(default_factory=list)

    def admit(self, ct: CompiledTransition, ctx_factory: Callable[[], GuardContext]) -> bool:
        """Whether ``ct`` admits the command: roles, window, required input, guard, named
        guards."""
        refused = _check_step(ct.roles, ct.spec.required, ct.guard, self.actor, self.input,
                              self.names, self.check_required, self.windows,
                              ct.spec.while_open, ct.spec.after_closed, ct.spec.scope)
        if refused is None:
            for name, fn in ct.conditions:
                if not _host_guard(name, fn, ctx_factory()):
                    refused = _GUARD, GuardRefused(f"named guard {name!r} refused")
                    break
        if refused is not None:
            self.refusals.append(refused)
            return False
        self.chosen = ct
        return True

    def best_refusal(self) -> CommandRefused:
        """The refusal of the candidate that got furthest through the checks."""
        return max(self.refusals, key=lambda r: r[0])[1]


def _host_guard(name: str, fn: Callable[[GuardContext], bool], ctx: GuardContext) -> bool:
    """A host's named guard; one that raises refuses (its message is not repeated: it may
    quote case data)."""
    try:
        return bool(fn(ctx))
    except Exception as e:
        raise GuardRefused(f"named guard {name!r} failed ({type(e).__name__})") from None


def _host_action(name: str, fn: Callable[[GuardContext], Mapping[str, Any] | None],
                 ctx: GuardContext) -> Mapping[str, Any] | None:
    try:
        return fn(ctx)
    except CommandRefused:
        raise
    except Exception as e:
        raise GuardRefused(f"named action {name!r} failed ({type(e).__name__})") from None


def evaluate_sets(sets: Mapping[str, Value], names: Mapping[str, Any]) -> dict[str, Any]:
    """The values a step's ``set`` computes (a refusal if one cannot be computed)."""
    out: dict[str, Any] = {}
    for k, v in sets.items():
        if isinstance(v, Expression):
            try:
                out[k] = v.evaluate(names)
            except ExpressionError as e:
                raise GuardRefused(f"value of {k!r} could not be computed: {e}") from None
        else:
            out[k] = v
    return out


# -- opening ------------------------------------------------------------------------
def decide_open(wf: CompiledWorkflow, actor: Actor, data: Mapping[str, Any],
                now: datetime) -> Decision:
    """Whether ``actor`` may open a case of ``wf`` with ``data``; the values it starts with."""
    try:
        if wf.open_roles and not (wf.open_roles & actor.roles):
            raise RoleRefused(f"opening a {wf.name!r} case needs one of the roles "
                              f"{sorted(wf.open_roles)}")
        foreign = sorted(set(data) - wf.open_inputs)
        if foreign:
            raise InvalidInput("; ".join(
                f"{f}: not a field of this workflow" if f not in wf.fields else
                f"{f}: not an input of 'open' (a new case may carry "
                f"{', '.join(sorted(wf.open_inputs)) or 'nothing'})" for f in foreign))
        values = wf.validate(data)
        missing = _missing(wf.spec.open.required, values)
        if missing:
            raise MissingFields(f"missing required input: {', '.join(missing)}")
        names = guard_names(wf, {}, values, actor, now, wf.initial)
        values.update(evaluate_sets(wf.open_sets, names))
        values = wf.validate(values)
    except CommandRefused as e:
        raise type(e)(e.reason, state=wf.initial, trigger="open") from None
    return Decision(EventKind.OPEN, wf.initial, values, role=_role_used(actor, wf.open_roles))


# -- transitions and activities -----------------------------------------------------
def decide(wf: CompiledWorkflow, case_id: str, state: str, data: Mapping[str, Any],
           trigger: str, actor: Actor, input: Mapping[str, Any], now: datetime,
           clocks: Mapping[str, Any] | None = None) -> Decision:
    """Whether ``trigger`` (a transition or an activity) with ``input`` is accepted on a case
    in ``state`` holding ``data`` (and ``clocks``, for its windows); the refusal names case,
    state and trigger."""
    windows = CaseAt(wf, data, clocks or {}, now)
    try:
        activity = wf.activities.get(trigger)
        if activity is not None:
            return _activity(wf, activity, case_id, state, data, actor, input, now, windows)
        return _transition(wf, case_id, state, data, trigger, actor, input, now, windows)
    except CommandRefused as e:
        raise type(e)(e.reason, case_id=case_id, state=state, trigger=trigger) from None


def _transition(wf: CompiledWorkflow, case_id: str, state: str, data: Mapping[str, Any],
                trigger: str, actor: Actor, input: Mapping[str, Any], now: datetime,
                windows: CaseAt | None = None) -> Decision:
    accepted = wf.inputs_by_trigger.get(trigger)
    if accepted is None:
        raise InvalidTrigger(f"workflow {wf.name!r} has no trigger or activity {trigger!r}")
    foreign = sorted(set(input) - accepted)
    if foreign:
        raise InvalidInput("; ".join(
            f"{f}: not a field of this workflow" if f not in wf.fields else
            f"{f}: not an input of {trigger!r} (it takes {', '.join(sorted(accepted)) or 'none'})"
            for f in foreign))
    values = wf.validate(input)
    names = guard_names(wf, data, values, actor, now, state)
    attempt = Attempt(actor, values, names, windows=windows)
    ct, new_state = _resolve(wf, state, trigger, attempt,
                             lambda: GuardContext(case_id, wf.name, state, data, values, actor, now))
    computed = evaluate_sets(ct.sets, names) if ct.sets else {}
    for name, fn in ct.actions:
        extra = _host_action(name, fn, GuardContext(case_id, wf.name, new_state,
                                                    {**data, **values, **computed}, values,
                                                    actor, now))
        if extra:
            computed.update(extra)
    # The input was checked above; what the definition and actions computed is checked too.
    changes = {**values, **wf.validate(computed)}
    return Decision(EventKind.TRANSITION, new_state, changes, role=_role_used(actor, ct.roles))


def _resolve(wf: CompiledWorkflow, state: str, trigger: str, attempt: Attempt,
             ctx_factory: Callable[[], GuardContext]) -> tuple[CompiledTransition, str]:
    for ct, dest in wf.candidates(state, trigger):
        if attempt.admit(ct, ctx_factory):
            return ct, dest
    raise attempt.best_refusal()


def _activity_names(wf: CompiledWorkflow, a: CompiledActivity, data: Mapping[str, Any],
                    details: Mapping[str, Any], actor: Actor, now: datetime,
                    state: str) -> dict[str, Any]:
    names = guard_names(wf, data, details, actor, now, state)
    names.update(dict.fromkeys(a.spec.fields))
    names.update(details)
    return names


def _activity(wf: CompiledWorkflow, a: CompiledActivity, case_id: str, state: str,
              data: Mapping[str, Any], actor: Actor, input: Mapping[str, Any],
              now: datetime, windows: CaseAt | None = None) -> Decision:
    if state not in a.leaves:
        raise WrongState(f"activity {a.name!r} is allowed only in {sorted(a.spec.states)}")
    if a.roles and not (a.roles & actor.roles):  # before the input: a stranger learns nothing
        raise RoleRefused(f"needs one of the roles {sorted(a.roles)}; {actor.id} has "
                          f"{sorted(actor.roles) or 'none'}")
    if windows is not None:
        outside = windows.scope_refusal(a.spec.scope, actor) or windows.refusal(
            a.spec.while_open, a.spec.after_closed)
        if outside is not None:
            raise outside
    details = a.validate(input)
    names = _activity_names(wf, a, data, details, actor, now, state)
    refused = _check_step(a.roles, a.spec.required, a.guard, actor, details, names, True)
    if refused is not None:
        raise refused[1]
    changes = evaluate_sets(a.sets, names) if a.sets else {}
    if changes:
        changes = wf.validate(changes)
    return Decision(EventKind.ACTIVITY, state, changes, details, _role_used(actor, a.roles))


# -- what an actor may do now ---------------------------------------------------------
def options(wf: CompiledWorkflow, case_id: str, state: str, data: Mapping[str, Any],
            actor: Actor, now: datetime,
            clocks: Mapping[str, Any] | None = None) -> list[TriggerOption]:
    """Each trigger and activity of the case's state, allowed or not (and why not) for
    ``actor``, by the checks :func:`decide` runs with no input yet. A guard that reads input
    the command has not given cannot be judged: such a step is listed as allowed with the
    input it requires, and ``fire`` judges it."""
    out: list[TriggerOption] = []
    names = guard_names(wf, data, {}, actor, now, state)
    windows = CaseAt(wf, data, clocks or {}, now)

    def window_of(w: str | None) -> tuple[str | None, datetime | None]:
        span = windows.when(w) if w else None
        return w, (span[1] if span else None)

    for trigger in wf.triggers_from(state):
        attempt = Attempt(actor, {}, names, check_required=False, windows=windows)
        try:
            ct, _ = _resolve(wf, state, trigger, attempt,
                             lambda: GuardContext(case_id, wf.name, state, data, {}, actor, now))
            out.append(TriggerOption(trigger, "transition", True, None, ct.spec.required,
                                     *window_of(ct.spec.while_open)))
        except CommandRefused as e:
            same = [t for t in wf.transitions if t.spec.trigger == trigger]
            reqs = tuple(dict.fromkeys(f for t in same for f in t.spec.required))
            on_input = isinstance(e, GuardRefused) and any(
                t.guard is not None and t.guard.names & set(t.spec.required) for t in same)
            bound = next((t.spec.while_open for t in same if t.spec.while_open), None)
            if on_input:
                out.append(TriggerOption(trigger, "transition", True,
                                         "the guard is checked against the input", reqs,
                                         *window_of(bound)))
            else:
                out.append(TriggerOption(trigger, "transition", False, f"[{e.rule}] {e.reason}",
                                         reqs, *window_of(bound)))
    for a in wf.activities_in(state):
        a_names = _activity_names(wf, a, data, {}, actor, now, state)
        refused = _check_step(a.roles, a.spec.required, a.guard, actor, {}, a_names, False,
                              windows, a.spec.while_open, a.spec.after_closed, a.spec.scope)
        on_input = refused is not None and refused[0] == _GUARD and a.guard is not None and bool(
            a.guard.names & set(a.spec.fields))
        if refused is None or on_input:
            out.append(TriggerOption(a.name, "activity", True,
                                     "the guard is checked against the input" if on_input else None,
                                     a.spec.required, *window_of(a.spec.while_open)))
        else:
            why = refused[1]
            out.append(TriggerOption(a.name, "activity", False, f"[{why.rule}] {why.reason}",
                                     a.spec.required, *window_of(a.spec.while_open)))
    return out


# -- assignment ------------------------------------------------------------------------
def decide_assignment(wf: CompiledWorkflow, case_id: str, state: str, data: Mapping[str, Any],
                      slot: str, value: Any, actor: Actor, reason: str | None,
                      final: bool) -> Decision:
    """Whether ``actor`` may put ``value`` in ``slot`` (assign, or reassign with a reason)."""
    try:
        s = wf.slots.get(slot)
        if s is None:
            raise InvalidInput(f"{wf.name!r} has no assignment slot {slot!r} (its slots: "
                               f"{', '.join(sorted(wf.slots)) or 'none'})")
        if final:
            raise WrongState("a closed case is not assigned")
        allowed = frozenset(wf.spec.assignment.roles)
        if allowed and not (allowed & actor.roles):
            raise RoleRefused(f"assigning needs one of the roles {sorted(allowed)}; {actor.id} "
                              f"has {sorted(actor.roles) or 'none'}")
        values = wf.validate({s.field: value})
        if values.get(s.field) in (None, "", []):
            raise MissingFields(f"assigning {slot!r} needs who (or which units)")
        held = data.get(s.field)
        again = held not in (None, "", [])
        if again and held == values[s.field]:
            raise InvalidInput(f"{slot!r} is held by that already")
        if again and wf.spec.assignment.reason_required and not (reason or "").strip():
            raise MissingFields(f"reassigning {slot!r} needs a reason")
    except CommandRefused as e:
        raise type(e)(e.reason, case_id=case_id, state=state, trigger=f"assign:{slot}") from None
    role = _role_used(actor, allowed)
    details = {"slot": slot, "from": held, "to": values[s.field], "reason": reason or None}
    return Decision(EventKind.ASSIGNMENT, state, values, details, role)


def decide_delegation(wf: CompiledWorkflow, case_id: str, state: str, data: Mapping[str, Any],
                      slot: str, stand_in: str, until: datetime, actor: Actor,
                      reason: str | None, final: bool, now: datetime) -> Decision:
    """Whether ``actor`` may name ``stand_in`` for the person in ``slot`` until ``until``:
    the holder of the slot may, and so may whoever may assign."""
    try:
        s = wf.slots.get(slot)
        if s is None:
            raise InvalidInput(f"{wf.name!r} has no assignment slot {slot!r}")
        if s.kind.value != "person":
            raise InvalidInput(f"{slot!r} holds units: only a person's slot has a stand-in")
        if final:
            raise WrongState("a closed case has no stand-ins")
        holder = data.get(s.field)
        if holder in (None, ""):
            raise WrongState(f"{slot!r} is not assigned: there is nobody to stand in for")
        allowed = frozenset(wf.spec.assignment.roles)
        if actor.id != holder and not (allowed & actor.roles):
            raise RoleRefused(f"only {slot} {holder} or one of the roles {sorted(allowed)} may "
                              f"name a stand-in; {actor.id} is neither")
        if not isinstance(stand_in, str) or not stand_in.strip() or len(stand_in) > 128:
            raise InvalidInput("stand_in: an actor id (at most 128 characters)")
        if stand_in == holder:
            raise InvalidInput(f"{stand_in} holds {slot!r} already")
        if until <= now:
            raise InvalidInput("until: a stand-in's period must end in the future")
        if until - now > timedelta(days=366):
            raise InvalidInput("until: a stand-in may be named for a year at most")
    except CommandRefused as e:
        raise type(e)(e.reason, case_id=case_id, state=state, trigger=f"delegate:{slot}") from None
    details = {"slot": slot, "holder": holder, "stand_in": stand_in,
               "until": until.isoformat(), "reason": reason or None}
    return Decision(EventKind.DELEGATION, state, {}, details, _role_used(actor, allowed))
