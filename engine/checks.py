"""Static checks of a workflow definition, run when it is loaded.

Each problem is returned with the location (a key path into the YAML) so the
loader can report file and line. Every problem is collected; none stops the
others from being found. An unknown state, role, field or trigger comes with the
nearest known name, when one is near ("did you mean 'handling.investigating'?").
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from difflib import get_close_matches
from typing import Any

from .definition import WorkflowSpec
from .expressions import ExpressionError, compile_expression
from .statetree import SEP, StateTree

Loc = tuple[Any, ...]
Found = list[tuple[Loc, str]]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming the known name nearest to ``name``, or ``""``.

    A state may be named by its last part alone (``investigating`` for
    ``handling.investigating``) or misspelt in any part.
    """
    names = list(dict.fromkeys(known))
    if not isinstance(name, str) or not name or not names:
        return ""
    best = [n for n in names if n != name and n.rsplit(SEP, 1)[-1] == name]
    best = best or get_close_matches(name, names, n=1, cutoff=0.6)
    if not best:
        tails: dict[str, str] = {}
        for n in names:
            tails.setdefault(n.rsplit(SEP, 1)[-1], n)
        near = get_close_matches(name.rsplit(SEP, 1)[-1], list(tails), n=1, cutoff=0.75)
        best = [tails[near[0]]] if near else []
    return f"; did you mean {best[0]!r}?" if best else ""


_UNKNOWN_NAME = re.compile(r"(?:unknown name|has no field) '([^']+)'")


def _expression_hint(message: str, known: Iterable[str]) -> str:
    """The nearest field to a name an expression does not know."""
    m = _UNKNOWN_NAME.search(message)
    return did_you_mean(m.group(1), known) if m else ""


def _host_function(*args: Any) -> Any:
    """Stands for a host function while expressions are checked (never called)."""
    raise NotImplementedError


def check_workflow(wf: WorkflowSpec, functions: Iterable[str] = ()) -> Found:
    """Every structural problem of ``wf`` as (location, message). ``functions``: the names
    of the host functions its expressions may call (those the engine is given)."""
    found: Found = []
    hooks = dict.fromkeys(functions, _host_function)
    tree = StateTree.of(wf)
    _check_states(wf, tree, found)
    roles = set(wf.roles)
    fields = set(wf.fields)

    def need_roles(loc: Loc, names: Iterable[str]) -> None:
        for i, r in enumerate(names):
            if r not in roles:
                found.append((loc + (i,), f"unknown role {r!r} (declared roles: {sorted(roles)})"
                                          f"{did_you_mean(r, wf.roles)}"))

    def need_fields(loc: Loc, names: Iterable[str], known: set[str]) -> None:
        for i, f in enumerate(names):
            if f not in known:
                found.append((loc + (i,), f"unknown field {f!r}{did_you_mean(f, sorted(known))}"))

    def need_expr(loc: Loc, src: str | None, known: set[str]) -> None:
        if src is None:
            return
        try:
            compile_expression(src, fields=known, functions=hooks)
        except ExpressionError as e:
            found.append((loc, f"guard does not compile: {e}{_expression_hint(str(e), sorted(known))}"))

    def need_set(loc: Loc, values: dict[str, Any], names: set[str] = fields) -> None:
        for k, v in values.items():
            if k not in fields:
                found.append((loc + (k,), f"unknown field {k!r}{did_you_mean(k, wf.fields)}"))
            elif isinstance(v, str):
                try:
                    compile_expression(v, fields=names, functions=hooks)
                except ExpressionError as e:
                    found.append((loc + (k,), f"value does not compile: {e}"
                                              f"{_expression_hint(str(e), sorted(names))}"))

    need_roles(("open", "roles"), wf.open.roles)
    need_fields(("open", "required"), wf.open.required, fields)
    need_fields(("open", "optional"), wf.open.optional, fields)
    need_set(("open", "set"), wf.open.set)

    for name, spec in wf.fields.items():
        if spec.type.value == "enum" and not spec.values:
            found.append((("fields", name, "type"), f"enum field {name!r} lists no values"))
        if spec.values and spec.type.value != "enum":
            found.append((("fields", name, "values"), "values are only allowed on enum fields"))

    states = tuple(tree.specs)
    for i, t in enumerate(wf.transitions):
        loc: Loc = ("transitions", i)
        for j, s in enumerate(t.source):
            if s not in tree:
                found.append((loc + ("source", j), f"transition {t.trigger!r}: unknown state {s!r}"
                                                   f"{did_you_mean(s, states)}"))
            elif all(tree.is_final(leaf) for leaf in tree.leaves_under(s)):
                found.append((loc + ("source", j),
                              f"transition {t.trigger!r} leaves final state {s!r}"))
        if t.dest not in tree:
            found.append((loc + ("dest",), f"transition {t.trigger!r}: unknown state {t.dest!r}"
                                           f"{did_you_mean(t.dest, states)}"))
        need_roles(loc + ("roles",), t.roles)
        need_fields(loc + ("required",), t.required, fields)
        need_fields(loc + ("optional",), t.optional, fields)
        need_expr(loc + ("guard",), t.guard, fields)
        need_set(loc + ("set",), t.set)
        if t.trigger in wf.activities:
            found.append((loc + ("trigger",), f"{t.trigger!r} is both a trigger and an activity"))

    for name, a in wf.activities.items():
        loc = ("activities", name)
        for j, s in enumerate(a.states):
            if s not in tree:
                found.append((loc + ("states", j), f"activity {name!r}: unknown state {s!r}"
                                                   f"{did_you_mean(s, states)}"))
        need_roles(loc + ("roles",), a.roles)
        need_fields(loc + ("required",), a.required, set(a.fields))
        need_expr(loc + ("guard",), a.guard, fields | set(a.fields))
        need_set(loc + ("set",), a.set, fields | set(a.fields))
        for f in a.fields:
            if f in fields:
                found.append((loc + ("fields", f), f"activity field {f!r} shadows a case field"))

    _check_timing(wf, tree, found, hooks)
    _check_graph(wf, tree, found)
    return found


RISK_NAMES = frozenset({"other_cases", "other_open_cases"})
REPORTS = frozenset({"supervision"})
CHECKS = frozenset({"overdue", "at_risk", "open"})


def _check_timing(wf: WorkflowSpec, tree: StateTree, found: Found,
                  hooks: dict[str, Any]) -> None:
    """Deadlines, escalation ladder, cycles, risk rules, calendar."""
    from apscheduler.triggers.cron import CronTrigger

    from .calendars import CALENDAR_NAMES, Duration

    triggers = {t.trigger for t in wf.transitions}
    fields = set(wf.fields)
    known_triggers = list(dict.fromkeys(t.trigger for t in wf.transitions))

    def need_state(loc: Loc, name: str) -> None:
        if name not in tree:
            found.append((loc, f"unknown state {name!r}{did_you_mean(name, tree.specs)}"))

    def unknown_field(loc: Loc, name: str) -> None:
        found.append((loc, f"unknown field {name!r}{did_you_mean(name, wf.fields)}"))

    def unknown_trigger(loc: Loc, name: str) -> None:
        found.append((loc, f"unknown trigger {name!r}{did_you_mean(name, known_triggers)}"))

    def need_duration(loc: Loc, text: str) -> None:
        try:
            Duration.parse(text)
        except ValueError as e:
            found.append((loc, str(e)))

    if wf.calendar not in CALENDAR_NAMES:
        found.append((("calendar",), f"unknown calendar {wf.calendar!r}; one of {list(CALENDAR_NAMES)}"))
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(wf.timezone)
    except Exception:
        found.append((("timezone",), f"unknown time zone {wf.timezone!r}"))

    for name, d in wf.deadlines.items():
        loc: Loc = ("deadlines", name)
        if (d.state is None) == (d.start is None):
            found.append((loc, f"deadline {name!r} needs either 'state' or 'start', not both"))
        if d.state is not None:
            need_state(loc + ("state",), d.state)
            if d.stop:
                found.append((loc + ("stop",), "a state deadline stops when the case leaves its state"))
        if d.start is not None and d.start != "open" and d.start not in triggers:
            found.append((loc + ("start",), f"unknown trigger {d.start!r} (or 'open')"
                                            f"{did_you_mean(d.start, [*known_triggers, 'open'])}"))
        for j, st in enumerate(d.stop):
            need_state(loc + ("stop", j), st)
        for j, st in enumerate(d.pause_in):
            need_state(loc + ("pause_in", j), st)
        need_duration(loc + ("within",), d.within)
        if d.extend is not None:
            if d.extend.trigger not in triggers:
                unknown_trigger(loc + ("extend", "trigger"), d.extend.trigger)
            if d.extend.days_field not in fields:
                unknown_field(loc + ("extend", "days_field"), d.extend.days_field)
        if d.breach.trigger is not None and d.breach.trigger not in triggers:
            unknown_trigger(loc + ("breach", "trigger"), d.breach.trigger)
        if d.breach.escalate and not wf.escalation:
            found.append((loc + ("breach",), "breach escalates but the workflow has no escalation ladder"))
        if d.breach.repeat is not None:
            need_duration(loc + ("breach", "repeat"), d.breach.repeat)

    for name, w in wf.windows.items():
        loc = ("windows", name)
        if (w.opens_on is None) == (w.from_field is None):
            found.append((loc, f"window {name!r} needs either 'opens_on' (a trigger) or "
                               "'from_field' (a datetime field), not both"))
        if w.opens_on is not None and w.opens_on not in triggers:
            found.append((loc + ("opens_on",), f"unknown trigger {w.opens_on!r}"))
        if w.from_field is not None:
            spec_of = wf.fields.get(w.from_field)
            if spec_of is None:
                found.append((loc + ("from_field",), f"unknown field {w.from_field!r}"))
            elif spec_of.type.value not in ("datetime", "date"):
                found.append((loc + ("from_field",),
                              f"field {w.from_field!r} is not a date or datetime"))
        need_duration(loc + ("within",), w.within)
    steps: list[tuple[Loc, str | None, str | None]] = [
        (("transitions", i), t.while_open, t.after_closed) for i, t in enumerate(wf.transitions)]
    steps += [(("activities", n), a.while_open, a.after_closed) for n, a in wf.activities.items()]
    for loc, *names in steps:
        for key, window in zip(("while_open", "after_closed"), names, strict=True):
            if window is not None and window not in wf.windows:
                found.append((loc + (key,), f"unknown window {window!r} (declared windows: "
                                            f"{sorted(wf.windows)})"))

    _check_assignment(wf, found)

    rungs = [r.name for r in wf.escalation]
    if len(set(rungs)) != len(rungs):
        found.append((("escalation",), "escalation rungs must have distinct names"))

    for name, c in wf.cycles.items():
        loc = ("cycles", name)
        if (c.every is None) == (c.cron is None):
            found.append((loc, f"cycle {name!r} needs either 'every' (per case) or 'cron' (all cases)"))
        if c.every is not None:
            need_duration(loc + ("every",), c.every)
            if not c.while_in:
                found.append((loc, f"cycle {name!r} repeats 'every' but names no 'while_in' state"))
            for j, st in enumerate(c.while_in):
                need_state(loc + ("while_in", j), st)
        if c.cron is not None:
            try:
                CronTrigger.from_crontab(c.cron)
            except ValueError as e:
                found.append((loc + ("cron",), f"bad cron expression {c.cron!r}: {e}"))
            if (c.report is None) == (c.check is None):
                found.append((loc, f"cron cycle {name!r} needs either 'report' or 'check'"))
            if c.report is not None and c.report not in REPORTS:
                found.append((loc + ("report",), f"unknown report {c.report!r}; one of {sorted(REPORTS)}"))
            if c.check is not None and c.check not in CHECKS:
                found.append((loc + ("check",), f"unknown check {c.check!r}; one of {sorted(CHECKS)}"))
        if c.between is not None:
            from datetime import date

            try:
                a, b = (date.fromisoformat(x) for x in c.between)
                if b < a:
                    found.append((loc + ("between",), "the end of 'between' comes before its start"))
            except ValueError:
                found.append((loc + ("between",), "'between' takes two ISO dates"))

    rep = wf.report
    for j, f in enumerate(rep.by):
        if f not in fields:
            unknown_field(("report", "by", j), f)
    for f in rep.groups:
        if f not in fields:
            unknown_field(("report", "groups", f), f)
    counts = {"cases", "events", "open", "closed", "overdue"}
    events = {t.trigger for t in wf.transitions} | set(wf.activities) | {r.name for r in wf.escalation}
    for name, fig in rep.figures.items():
        loc = ("report", "figures", name)
        kinds = [k for k in (fig.count, fig.sum, fig.ratio) if k is not None]
        if len(kinds) != 1:
            found.append((loc, f"figure {name!r} needs exactly one of count, sum, ratio"))
        if fig.count is not None and fig.count not in counts:
            found.append((loc + ("count",), f"unknown count {fig.count!r}; one of {sorted(counts)}"))
        if fig.ratio is not None:
            for part in fig.ratio:
                if part not in rep.figures or rep.figures[part].ratio is not None:
                    found.append((loc + ("ratio",), f"ratio part {part!r} is not a count or sum figure"))
        for j, n in enumerate(fig.name):
            if n not in events and not n.endswith("_warning"):
                found.append((loc + ("name", j), f"unknown trigger, activity or rung {n!r}"
                                                 f"{did_you_mean(n, sorted(events))}"))
        for j, st in enumerate(fig.state):
            need_state(loc + ("state", j), st)
        for f in fig.where:
            if f not in fields:
                unknown_field(loc + ("where", f), f)

    if wf.risk.identity is not None and wf.risk.identity not in fields:
        unknown_field(("risk", "identity"), wf.risk.identity)
    risk_names = fields | RISK_NAMES
    for name, expr in wf.risk.rules.items():
        try:
            compile_expression(expr, fields=risk_names, functions=hooks)
        except ExpressionError as e:
            found.append((("risk", "rules", name), f"rule does not compile: {e}"
                                                   f"{_expression_hint(str(e), sorted(risk_names))}"))


SCOPE_WORDS = frozenset({"unit", "assisting"})


def _check_assignment(wf: WorkflowSpec, found: Found) -> None:
    """Slots, scopes, searchable and summary fields."""
    roles = set(wf.roles)
    slots = wf.assignment.slots
    leads = [n for n, s in slots.items() if s.lead]
    if len(leads) > 1:
        found.append((("assignment", "slots"), f"only one slot may be the lead unit, not {leads}"))
    want = {"person": ("string",), "unit": ("string",), "units": ("list",)}
    for name, s in slots.items():
        loc: Loc = ("assignment", "slots", name)
        field = s.field or name
        spec = wf.fields.get(field)
        if spec is None:
            found.append((loc, f"slot {name!r} keeps its holder in field {field!r}, which the "
                               "workflow does not declare"))
        elif spec.type.value not in want[s.kind.value]:
            found.append((loc, f"slot {name!r} holds {s.kind.value}: its field {field!r} must "
                               f"be of type {' or '.join(want[s.kind.value])}"))
        if s.lead and s.kind.value != "unit":
            found.append((loc + ("lead",), "only a unit slot can be the lead unit"))
    for i, r in enumerate(wf.assignment.roles):
        if r not in roles:
            found.append((("assignment", "roles", i), f"unknown role {r!r}"))
    has_units = any(s.kind.value == "units" for s in slots.values())
    steps: list[tuple[Loc, tuple[str, ...]]] = [
        (("transitions", i, "scope"), t.scope) for i, t in enumerate(wf.transitions)]
    steps += [(("activities", n, "scope"), a.scope) for n, a in wf.activities.items()]
    for loc, scope in steps:
        for j, item in enumerate(scope):
            if item.startswith("role:"):
                if item[5:] not in roles:
                    found.append((loc + (j,), f"unknown role {item[5:]!r} in scope {item!r}"))
            elif item == "unit" and not leads:
                found.append((loc + (j,), "scope 'unit' needs a slot marked as the lead unit"))
            elif item == "assisting" and not has_units:
                found.append((loc + (j,), "scope 'assisting' needs a slot of kind units"))
            elif item not in SCOPE_WORDS and item not in slots:
                found.append((loc + (j,), f"unknown scope {item!r}: a slot "
                                          f"({', '.join(sorted(slots)) or 'none declared'}), "
                                          "'unit', 'assisting' or 'role:NAME'"))
    for key in ("search", "summary"):
        for j, f in enumerate(getattr(wf, key)):
            if f not in wf.fields:
                found.append(((key, j), f"unknown field {f!r}"))
            elif key == "search" and wf.fields[f].pii:
                found.append(((key, j), f"{f!r} is personal data (pii): it cannot be searched "
                                        "by value"))


def _check_states(wf: WorkflowSpec, tree: StateTree, found: Found) -> None:
    loc_of = _loc_of
    if wf.initial not in tree:
        found.append((("initial",), f"initial state {wf.initial!r} is not a state"
                                    f"{did_you_mean(wf.initial, tree.specs)}"))
    for path, spec in tree.specs.items():
        name = path.rsplit(SEP, 1)[-1]
        if not name.replace("_", "").isalnum() or not name[0].isalpha() or "__" in name:
            found.append((loc_of(path), f"state name {name!r} must be letters, digits and "
                                        "single underscores, starting with a letter"))
        if spec.states:
            if spec.final:
                found.append((loc_of(path) + ("final",), f"compound state {path!r} cannot be final"))
            if spec.initial is None:
                found.append((loc_of(path), f"compound state {path!r} has no initial child"))
            elif spec.initial not in spec.states:
                found.append((loc_of(path) + ("initial",),
                              f"initial {spec.initial!r} is not a child of {path!r}"
                              f"{did_you_mean(spec.initial, spec.states)}"))
        elif spec.initial is not None:
            found.append((loc_of(path) + ("initial",), f"state {path!r} has no children"))
    if not any(s.final for s in tree.specs.values()):
        found.append((("states",), "no state is marked final"))


def _check_graph(wf: WorkflowSpec, tree: StateTree, found: Found) -> None:
    """Reachability from the initial state, and dead ends that are not final."""
    # A transition naming an unknown state is reported already; it still counts as a way out
    # of its sources and a way into its destination, so it causes no second-hand reports.
    outgoing: dict[str, set[str]] = {leaf: set() for leaf in tree.leaves}
    broken_exits: set[str] = set()
    maybe_reached: set[str] = set()
    for t in wf.transitions:
        dest = tree.entry_leaf(t.dest) if t.dest in tree else None
        known = [s for s in t.source if s in tree]
        for s in known:
            for leaf in tree.leaves_under(s):
                if dest is None:
                    broken_exits.add(leaf)
                else:
                    outgoing[leaf].add(dest)
        if dest is not None and len(known) < len(t.source):
            maybe_reached.add(dest)
    start = tree.entry_leaf(wf.initial) if wf.initial in tree else None
    if start is None:
        return
    if any(t.dest not in tree for t in wf.transitions):
        # A misspelt destination may be the way into a state: reachability cannot be judged.
        maybe_reached |= set(tree.leaves)
    seen = {start} | maybe_reached
    todo = deque(seen)
    while todo:
        for nxt in outgoing[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    def unreachable(path: str) -> bool:
        return not any(leaf in seen for leaf in tree.leaves_under(path))

    for path in tree.specs:
        # Report the outermost unreachable state only, not each of its children too.
        if unreachable(path) and not any(unreachable(a) for a in tree.ancestors(path)[1:]):
            found.append((_loc_of(path), f"state {path!r} is unreachable from {wf.initial!r}"))
    for leaf in tree.leaves:
        if leaf in seen and not tree.is_final(leaf) and not outgoing[leaf] and leaf not in broken_exits:
            found.append((_loc_of(leaf), f"state {leaf!r} is a dead end: not final and no way out"))


def _loc_of(path: str) -> Loc:
    """The YAML key path of a state given by its dotted path."""
    parts = path.split(SEP)
    loc: list[Any] = ["states", parts[0]]
    for p in parts[1:]:
        loc += ["states", p]
    return tuple(loc)
