"""State diagrams of a workflow: Mermaid text and Graphviz pictures.

Mermaid text is drawn by ``transitions``' diagram extension and needs nothing
else. PNG and SVG are built here as Graphviz DOT: they need the ``pictures``
extra (the ``graphviz`` package) and Graphviz's ``dot`` program on the PATH
(Debian: ``apt-get install graphviz``). Compound states are clusters with their
initial child marked, final states have a double border, each transition is an
edge labelled with its trigger (its guard is the edge's tooltip in SVG). With
``counts`` from :meth:`Engine.state_counts`, each state also says how many open
cases it holds, and the states holding overdue cases are filled red.

The functions take a workflow's definition (``engine.workflow(name).definition``,
or ``load_definition(path).spec`` for a file). States and triggers are drawn with their
``label`` where the definition gives one (the name beneath it, smaller), in the CJK font
of :mod:`casework.views.fonts`, so Chinese labels are drawn, not boxes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transitions.extensions import HierarchicalGraphMachine

from .. import CaseworkError
from ..errors import MissingExtra
from .fonts import dot_environment
from .labels import Labels

if TYPE_CHECKING:
    import graphviz

    from ..definition import StateSpec, WorkflowSpec

__all__ = ["GraphvizNotFound", "mermaid", "render", "render_with_counts", "workflow_graph"]

SEP = "."
_GRAPH_SEP = "__"  # state names may hold "_" but never "__"

Counts = Mapping[str, tuple[int, int]]  # {leaf state: (open, overdue)}

_FONT = "Helvetica"
_OPEN_FILL, _OVERDUE_FILL, _OVERDUE_LINE = "#dbe8f6", "#f6c6c1", "#c0392b"


class GraphvizNotFound(MissingExtra):
    """Graphviz's ``dot`` program (a system package, not a Python one) is not on the PATH."""

    def __init__(self) -> None:
        CaseworkError.__init__(
            self, "drawing PNG or SVG needs Graphviz's 'dot' program, which is not on the PATH: "
                  "install the graphviz package of your system (Debian/Ubuntu: apt-get install "
                  "graphviz; Fedora: dnf install graphviz; macOS: brew install graphviz); "
                  "Mermaid text (the default format) needs nothing")
        self.feature = "PNG and SVG diagrams"
        self.extra = "pictures"


def _graphviz() -> Any:
    """The ``graphviz`` package, imported on first use (it is part of the ``pictures`` extra)."""
    try:
        import graphviz
    except ImportError:
        raise MissingExtra("PNG and SVG diagrams", "pictures", "graphviz") from None
    return graphviz


class _GraphState(HierarchicalGraphMachine.state_cls):  # type: ignore[misc,valid-type]
    separator = _GRAPH_SEP


class _GraphMachine(HierarchicalGraphMachine):
    state_cls = _GraphState


def _states(states: Mapping[str, StateSpec]) -> list[dict[str, Any]]:
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


def mermaid(spec: WorkflowSpec) -> str:
    """The workflow as a Mermaid ``stateDiagram-v2`` (drawn by ``transitions``)."""

    def path(p: str) -> str:
        return p.replace(SEP, _GRAPH_SEP)

    transitions = []
    for t in spec.transitions:
        label = [t.guard.replace('"', "'")] if t.guard else []
        transitions.append({"trigger": t.trigger, "source": [path(s) for s in t.source],
                            "dest": path(t.dest), "conditions": label})
    machine = _GraphMachine(states=_states(spec.states), transitions=transitions,
                            initial=path(spec.initial), auto_transitions=False,
                            graph_engine="mermaid", show_conditions=True,
                            title=spec.title or spec.workflow)
    return str(machine.get_graph().draw(None))


# -- the states as drawn: dotted paths, compounds with their children ---------
@dataclass(frozen=True)
class _Layout:
    specs: dict[str, StateSpec]
    children: dict[str, tuple[str, ...]]
    labels: Labels = field(default_factory=lambda: Labels(None))

    @classmethod
    def of(cls, spec: WorkflowSpec, labels: bool = True) -> _Layout:
        def walk(prefix: str, states: Mapping[str, StateSpec]) -> Iterator[tuple[str, StateSpec]]:
            for name, st in states.items():
                path = f"{prefix}{SEP}{name}" if prefix else name
                yield path, st
                yield from walk(path, st.states)

        specs = dict(walk("", spec.states))
        return cls(specs, {p: tuple(f"{p}{SEP}{c}" for c in s.states) for p, s in specs.items()},
                   Labels(spec if labels else None))

    def name(self, path: str) -> str:
        """The state's label in bold, with its own name beneath when the label differs."""
        own = path.rsplit(SEP, 1)[-1]
        shown = self.labels.state(path)
        if shown == own:
            return f"<b>{escape(own)}</b>"
        return f'<b>{escape(shown)}</b><br/><font point-size="9" color="#7f8c8d">{escape(own)}</font>'

    def cluster_name(self, path: str) -> str:
        own = path.rsplit(SEP, 1)[-1]
        shown = self.labels.state(path)
        if shown == own:
            return f"<b>{escape(own)}</b>"
        return f'<b>{escape(shown)}</b> <font point-size="9" color="#7f8c8d">{escape(own)}</font>'


    def leaves_under(self, path: str) -> list[str]:
        return [p for p, kids in self.children.items()
                if not kids and (p == path or p.startswith(path + SEP))]

    def entry(self, path: str) -> str:
        """The leaf a transition into ``path`` enters (``path`` itself when undefined)."""
        here = path
        while self.children.get(here):
            child = f"{here}{SEP}{self.specs[here].initial}"
            if child not in self.specs:
                return path
            here = child
        return here if here in self.specs else path


# -- Graphviz ------------------------------------------------------------
def _cluster(path: str) -> str:
    return f"cluster_{path}"


def _sum(tree: _Layout, path: str, counts: Counts) -> tuple[int, int]:
    leaves = tree.leaves_under(path)
    return (sum(counts.get(s, (0, 0))[0] for s in leaves),
            sum(counts.get(s, (0, 0))[1] for s in leaves))


def _counts_line(n_open: int, n_overdue: int) -> str:
    line = f"{n_open} open" if n_open else '<font color="#95a5a6">0 open</font>'
    if n_overdue:
        line += f' · <font color="{_OVERDUE_LINE}"><b>{n_overdue} overdue</b></font>'
    return line


def _leaf(g: Any, tree: _Layout, path: str, counts: Counts | None) -> None:
    spec = tree.specs[path]
    name = tree.name(path)
    attrs: dict[str, str] = {"tooltip": spec.description or path}
    if spec.final:
        attrs["peripheries"] = "2"
    if counts is None or spec.final:
        label = name
    else:
        n_open, n_overdue = counts.get(path, (0, 0))
        label = f'{name}<br/><font point-size="10">{_counts_line(n_open, n_overdue)}</font>'
        if n_overdue:
            attrs.update(fillcolor=_OVERDUE_FILL, color=_OVERDUE_LINE, penwidth="2")
        elif n_open:
            attrs["fillcolor"] = _OPEN_FILL
    g.node(path, f"<{label}>", **attrs)


def _add(g: Any, tree: _Layout, paths: tuple[str, ...], counts: Counts | None) -> None:
    for path in paths:
        kids = tree.children[path]
        if not kids:
            _leaf(g, tree, path, counts)
            continue
        with g.subgraph(name=_cluster(path)) as sub:
            label = tree.cluster_name(path)
            if counts is not None:
                label += f'  <font point-size="10">{_counts_line(*_sum(tree, path, counts))}</font>'
            sub.attr(label=f"<{label}>", style="rounded", color="#7f8c8d", labeljust="l",
                     tooltip=tree.specs[path].description or path)
            start = f"{path}{SEP}__initial__"
            sub.node(start, "", shape="point", width="0.12", style="filled", fillcolor="black")
            entry = tree.entry(path)
            if entry != path:
                sub.edge(start, entry, **_into(tree, start, entry))
            _add(sub, tree, kids, counts)


def _into(tree: _Layout, tail: str, dest: str) -> dict[str, str]:
    """Edge attributes for an edge whose head is ``dest`` (a compound: its cluster's border)."""
    if tree.children.get(dest) and not tail.startswith(dest + SEP):
        return {"lhead": _cluster(dest)}
    return {}


def workflow_graph(spec: WorkflowSpec, counts: Counts | None = None, *,
                   labels: bool = False) -> graphviz.Digraph:
    """The workflow as a Graphviz graph; with ``counts``, open and overdue cases per state;
    with ``labels``, states and triggers named by the definition's labels (the pictures
    :func:`render` and :func:`render_with_counts` draw are so named)."""
    gv = _graphviz()
    tree = _Layout.of(spec, labels)
    g = gv.Digraph(spec.workflow)
    title = f'<font point-size="16">{escape(spec.title or spec.workflow)}</font>'
    if counts is not None:
        n_open = sum(o for o, _ in counts.values())
        n_overdue = sum(d for _, d in counts.values())
        title += f'<br/><font point-size="11">{_counts_line(n_open, n_overdue)} cases</font>'
        unknown = sorted(s for s in counts if s not in tree.specs)
        if unknown:
            title += (f'<br/><font point-size="10">also open in states of other versions: '
                      f'{escape(", ".join(f"{s} ({counts[s][0]})" for s in unknown))}</font>')
    font = dot_environment()[1] or _FONT
    g.attr(rankdir="LR", compound="true", label=f"<{title}>", labelloc="t", fontname=font,
           nodesep="0.35", ranksep="0.5")
    g.attr("node", shape="box", style="rounded,filled", fillcolor="white", fontname=font,
           fontsize="12")
    g.attr("edge", fontname=font, fontsize="10", color="#555555", arrowsize="0.7")
    g.node("__initial__", "", shape="point", width="0.18", style="filled", fillcolor="black")
    top = tuple(p for p in tree.specs if SEP not in p)
    _add(g, tree, top, counts)
    g.edge("__initial__", tree.entry(spec.initial), **_into(tree, "__initial__", spec.initial))
    for t in spec.transitions:
        head = tree.entry(t.dest)
        for src in t.source:
            tail = tree.entry(src)
            attrs = _into(tree, src, t.dest)
            if tree.children.get(src) and not t.dest.startswith(src + SEP):
                attrs["ltail"] = _cluster(src)
            attrs["tooltip"] = f"{t.trigger} [{t.guard}]" if t.guard else t.trigger
            g.edge(tail, head, label=escape(tree.labels.trigger(t.trigger)), **attrs)
    return g


def _draw(g: graphviz.Digraph, out: Path, fmt: str) -> Path:
    if fmt not in {"png", "svg"}:
        raise CaseworkError(f"diagram format must be png or svg, not {fmt!r}")
    _graphviz()
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFound()
    if fmt == "png":
        g = g.copy()
        g.attr(dpi="110")  # sharper than the default 72 dpi, still a moderate size
    env, _ = dot_environment()  # fontconfig that also sees the packaged CJK font
    try:
        done = subprocess.run([dot, f"-T{fmt}"], input=g.source.encode("utf-8"), env=env,
                              capture_output=True, timeout=120, check=False)
    except FileNotFoundError:
        raise GraphvizNotFound() from None
    except subprocess.TimeoutExpired:
        raise CaseworkError("Graphviz could not draw the diagram: dot took over 120 s") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["failed"]
        raise CaseworkError(f"Graphviz could not draw the diagram: {why[0][:300]}")
    data = done.stdout
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def render(spec: WorkflowSpec, out: Path, fmt: str = "png", *, labels: bool = True) -> Path:
    """Draw the workflow to ``out`` as PNG or SVG with Graphviz."""
    return _draw(workflow_graph(spec, labels=labels), out, fmt)


def render_with_counts(spec: WorkflowSpec, counts: Counts, out: Path, fmt: str = "png", *,
                       labels: bool = True) -> Path:
    """Draw the workflow with its open and overdue cases per state (``Engine.state_counts``)."""
    return _draw(workflow_graph(spec, counts, labels=labels), out, fmt)
