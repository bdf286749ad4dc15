"""Presentation: diagrams, pictures and text views of workflows and cases.

Built on the engine's public API only; the core never imports this package.
Mermaid text and the text tables need nothing beyond the core install; PNG and
SVG pictures need the ``pictures`` extra (matplotlib, graphviz), imported when a
picture is drawn, and Graphviz's ``dot`` program for diagrams. Without them,
drawing raises :class:`~casework.errors.MissingExtra` naming what to install.
"""

from .diagrams import GraphvizNotFound, mermaid, render, render_with_counts, workflow_graph
from .display import CaseView, format_case
from .labels import Labels
from .pictures import render_figure_chart, render_timeline, render_unit_chart
from .tables import report_table

__all__ = [
    "CaseView", "GraphvizNotFound", "Labels", "format_case", "mermaid", "render",
    "render_figure_chart", "render_timeline",
    "render_unit_chart", "render_with_counts", "report_table", "workflow_graph",
]
