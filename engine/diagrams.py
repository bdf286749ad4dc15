"""State diagrams of a workflow, drawn by ``transitions``' diagram extension.

Mermaid text needs nothing else; PNG and SVG need Graphviz's ``dot`` on the
PATH (Debian: ``apt-get install graphviz``). Nested states are drawn as
composite states; a transition's label carries its trigger and guard.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from transitions.extensions import HierarchicalGraphMachine

from .definition import StateSpec, WorkflowSpec
from .errors import CaseworkError
from .statetree import SEP

_GRAPH_SEP = "__"  # state names may hold "_" but never "__"


class _GraphState(HierarchicalGraphMachine.state_cls):  # type: ignore[misc,valid-type]
    separator = _GRAPH_SEP


class _GraphMachine(HierarchicalGraphMachine):
    state_cls = _GraphState


def _states(states: dict[str, StateSpec]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, spec in states.items():
        d: dict[str, Any] = {"name": name}
        if spec.final:
            d["final"] = True
        if spec.states:
            d["children"] = _states(spec.states)
            d["initial"] = spec.initial
        out.append(d)
    return out


def _machine(spec: WorkflowSpec, engine: Literal["graphviz", "mermaid"]) -> Any:
    def path(p: str) -> str:
        return p.replace(SEP, _GRAPH_SEP)

    transitions = []
    for t in spec.transitions:
        label = [t.guard.replace('"', "'")] if t.guard else []
        transitions.append({"trigger": t.trigger, "source": [path(s) for s in t.source],
                            "dest": path(t.dest), "conditions": label})
    return _GraphMachine(states=_states(spec.states), transitions=transitions,
                         initial=path(spec.initial), auto_transitions=False, graph_engine=engine,
                         show_conditions=True, title=spec.title or spec.workflow)


def mermaid(spec: WorkflowSpec) -> str:
    """The workflow as a Mermaid ``stateDiagram-v2``."""
    return str(_machine(spec, "mermaid").get_graph().draw(None))


def render(spec: WorkflowSpec, out: Path, fmt: str = "png") -> Path:
    """Draw the workflow to ``out`` as PNG or SVG with Graphviz."""
    if fmt not in {"png", "svg"}:
        raise CaseworkError(f"diagram format must be png or svg, not {fmt!r}")
    if shutil.which("dot") is None:
        raise CaseworkError("drawing PNG or SVG needs Graphviz's 'dot' "
                            "(Debian: apt-get install graphviz); Mermaid text needs nothing")
    out.parent.mkdir(parents=True, exist_ok=True)
    _machine(spec, "graphviz").get_graph().draw(str(out), format=fmt, prog="dot")
    return out
