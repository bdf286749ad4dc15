"""Static checks of a workflow definition, run when it is loaded.

Each problem is returned with the location (a key path into the YAML) so the
loader can report file and line. Every problem is collected; none stops the
others from being found.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from .definition import WorkflowSpec
from .expressions import ExpressionError, compile_expression
from .statetree import SEP, StateTree

Loc = tuple[Any, ...]
Found = list[tuple[Loc, str]]


def check_workflow(wf: WorkflowSpec) -> Found:
    """Every structural problem of ``wf`` as (location, message)."""
    found: Found = []
    tree = StateTree.of(wf)
    _check_states(wf, tree, found)
    roles = set(wf.roles)
    fields = set(wf.fields)

    def need_roles(loc: Loc, names: Iterable[str]) -> None:
        for i, r in enumerate(names):
            if r not in roles:
                found.append((loc + (i,), f"unknown role {r!r} (declared roles: {sorted(roles)})"))

    def need_fields(loc: Loc, names: Iterable[str], known: set[str]) -> None:
        for i, f in enumerate(names):
            if f not in known:
                found.append((loc + (i,), f"unknown field {f!r}"))

    def need_expr(loc: Loc, src: str | None, known: set[str]) -> None:
        if src is None:
            return
        try:
            compile_expression(src, fields=known)
        except ExpressionError as e:
            found.append((loc, f"guard does not compile: {e}"))

    def need_set(loc: Loc, values: dict[str, Any], names: set[str] = fields) -> None:
        for k, v in values.items():
            if k not in fields:
                found.append((loc + (k,), f"unknown field {k!r}"))
            elif isinstance(v, str):
                try:
                    compile_expression(v, fields=names)
                except ExpressionError as e:
                    found.append((loc + (k,), f"value does not compile: {e}"))

    need_roles(("open", "roles"), wf.open.roles)
    need_fields(("open", "required"), wf.open.required, fields)
    need_set(("open", "set"), wf.open.set)

    for name, spec in wf.fields.items():
        if spec.type.value == "enum" and not spec.values:
            found.append((("fields", name, "type"), f"enum field {name!r} lists no values"))
        if spec.values and spec.type.value != "enum":
            found.append((("fields", name, "values"), "values are only allowed on enum fields"))

    for i, t in enumerate(wf.transitions):
        loc: Loc = ("transitions", i)
        for j, s in enumerate(t.source):
            if s not in tree:
                found.append((loc + ("source", j), f"transition {t.trigger!r}: unknown state {s!r}"))
            elif all(tree.is_final(leaf) for leaf in tree.leaves_under(s)):
                found.append((loc + ("source", j),
                              f"transition {t.trigger!r} leaves final state {s!r}"))
        if t.dest not in tree:
            found.append((loc + ("dest",), f"transition {t.trigger!r}: unknown state {t.dest!r}"))
        need_roles(loc + ("roles",), t.roles)
        need_fields(loc + ("required",), t.required, fields)
        need_expr(loc + ("guard",), t.guard, fields)
        need_set(loc + ("set",), t.set)
        if t.trigger in wf.activities:
            found.append((loc + ("trigger",), f"{t.trigger!r} is both a trigger and an activity"))

    for name, a in wf.activities.items():
        loc = ("activities", name)
        for j, s in enumerate(a.states):
            if s not in tree:
                found.append((loc + ("states", j), f"activity {name!r}: unknown state {s!r}"))
        need_roles(loc + ("roles",), a.roles)
        need_fields(loc + ("required",), a.required, set(a.fields))
        need_expr(loc + ("guard",), a.guard, fields | set(a.fields))
        need_set(loc + ("set",), a.set, fields | set(a.fields))
        for f in a.fields:
            if f in fields:
                found.append((loc + ("fields", f), f"activity field {f!r} shadows a case field"))

    if not found:
        _check_graph(wf, tree, found)
    return found


def _check_states(wf: WorkflowSpec, tree: StateTree, found: Found) -> None:
    loc_of = _loc_of
    if wf.initial not in tree:
        found.append((("initial",), f"initial state {wf.initial!r} is not a state"))
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
                              f"initial {spec.initial!r} is not a child of {path!r}"))
        elif spec.initial is not None:
            found.append((loc_of(path) + ("initial",), f"state {path!r} has no children"))
    if not any(s.final for s in tree.specs.values()):
        found.append((("states",), "no state is marked final"))


def _check_graph(wf: WorkflowSpec, tree: StateTree, found: Found) -> None:
    """Reachability from the initial state, and dead ends that are not final."""
    outgoing: dict[str, set[str]] = {leaf: set() for leaf in tree.leaves}
    for t in wf.transitions:
        dest = tree.entry_leaf(t.dest)
        if dest is None:
            continue
        for s in t.source:
            for leaf in tree.leaves_under(s):
                outgoing[leaf].add(dest)
    start = tree.entry_leaf(wf.initial)
    if start is None:
        return
    seen = {start}
    todo = deque([start])
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
        if leaf in seen and not tree.is_final(leaf) and not outgoing[leaf]:
            found.append((_loc_of(leaf), f"state {leaf!r} is a dead end: not final and no way out"))


def _loc_of(path: str) -> Loc:
    """The YAML key path of a state given by its dotted path."""
    parts = path.split(SEP)
    loc: list[Any] = ["states", parts[0]]
    for p in parts[1:]:
        loc += ["states", p]
    return tuple(loc)
