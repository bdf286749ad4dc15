"""Pictures: the workflow with its open and overdue cases, one case's timeline, the unit chart.

Drawn from the demo's year of 12 petition cases (run once for the module). Graphviz
pictures are skipped only when ``dot`` is missing outside CI; matplotlib needs nothing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from casework import CaseworkError, Engine, load_definition
from casework.diagrams import workflow_graph
from casework.pictures import render_timeline, render_unit_chart, render_with_counts
from casework.types import Case
from click.testing import CliRunner
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import run
from demo import WORKFLOWS, run_demo
from tests.conftest import PETITION

needs_dot = pytest.mark.skipif(shutil.which("dot") is None and os.environ.get("CI") != "true",
                               reason="Graphviz's dot is not installed")
PNG, SVG = b"\x89PNG\r\n\x1a\n", b"<?xml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Engine, list[str]]]:
    db = tmp_path_factory.mktemp("pictures") / "demo.db"
    ids = run_demo(db, echo=lambda _: None)["ids"]
    engine = Engine(f"sqlite:///{db}", WORKFLOWS)
    yield db, engine, ids
    engine.close()


def _case(engine: Engine, ids: list[str], test: Any) -> Case:
    for cid in ids:
        case = engine.get_case(cid)
        if test(case, engine):
            return case
    raise AssertionError("the demo has no such case")


def _escalated(c: Case, _: Engine) -> bool:
    return not c.final and c.escalation_level == 3


def _extended(c: Case, _: Engine) -> bool:
    return bool(c.clocks.get("handling", {}).get("extended_days"))


def _with_timer(c: Case, e: Engine) -> bool:
    return bool(e.pending_timers(c.id))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def _blank_png(width: int, height: int) -> bytes:
    """An empty matplotlib canvas of the same pixel size, as PNG."""
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _real_png(path: Path, factor: float = 3.0) -> bytes:
    data = path.read_bytes()
    w, h = _png_size(data)
    assert w > 400 and h > 200
    blank = _blank_png(w, h)
    assert _png_size(blank) == (w, h)
    assert len(data) > factor * len(blank), (len(data), len(blank))
    return data


def _node_line(source: str, state: str) -> str:
    lines = [ln for ln in source.splitlines() if ln.strip().startswith(f'"{state}" [')
             or ln.strip().startswith(f"{state} [")]
    assert len(lines) == 1, (state, lines)
    return lines[0]


def _pii_values(case: Case) -> list[str]:
    spec = load_definition(PETITION).spec
    return [str(case.data[f]) for f, s in spec.fields.items() if s.pii and case.data.get(f)]


# -- the workflow with its open and overdue cases -----------------------
def test_counts_diagram_source_shows_open_and_overdue_cases(demo: tuple[Path, Engine, list[str]]) -> None:
    _, engine, _ = demo
    counts = engine.state_counts("petition")
    assert sum(o for o, _ in counts.values()) == 4  # the demo's four cases in progress
    assert sum(d for _, d in counts.values()) >= 2
    spec = load_definition(PETITION).spec
    source = workflow_graph(spec, counts).source
    for state, (n_open, n_overdue) in counts.items():
        line = _node_line(source, state)
        assert f"{n_open} open" in line
        if n_overdue:
            assert f"{n_overdue} overdue" in line and "fillcolor=\"#f6c6c1\"" in line
        else:
            assert "overdue" not in line and "#f6c6c1" not in line
    assert "0 open" in _node_line(source, "registered")
    assert "overdue" in source.splitlines()[1]  # the title sums them up
    assert "subgraph cluster_handling" in source and "subgraph cluster_review" in source
    for final in ("archived", "referred", "terminated", "reported_closed"):
        assert "peripheries=2" in _node_line(source, final)
        assert "open" not in _node_line(source, final)  # a final state holds no open case


def test_plain_diagram_source_has_clusters_finals_and_trigger_labels() -> None:
    spec = load_definition(PETITION).spec
    source = workflow_graph(spec).source
    assert " open" not in source and "overdue" not in source
    assert "peripheries=2" in _node_line(source, "archived")
    assert "peripheries" not in _node_line(source, "replied")
    labels = set(re.findall(r"\blabel=(\w+)", source))
    assert {t.trigger for t in spec.transitions} <= labels
    # a transition into a compound state ends at its cluster, entering its initial child
    assign = next(ln for ln in source.splitlines() if "label=assign" in ln)
    assert '-> "handling.investigating"' in assign and "lhead=cluster_handling" in assign


@needs_dot
@pytest.mark.parametrize("fmt,magic", [("png", PNG), ("svg", SVG)])
def test_render_with_counts_draws_a_real_picture(demo: tuple[Path, Engine, list[str]], tmp_path: Path,
                                                 fmt: str, magic: bytes) -> None:
    _, engine, _ = demo
    spec = load_definition(PETITION).spec
    out = render_with_counts(spec, engine.state_counts("petition"), tmp_path / f"counts.{fmt}", fmt)
    data = out.read_bytes()
    assert data.startswith(magic)
    if fmt == "png":
        assert len(data) > 50_000
        _real_png(out)
    else:
        text = data.decode("utf-8")
        assert "overdue" in text and "investigating" in text and "<svg" in text


@needs_dot
def test_plain_diagram_png_uses_the_same_builder(tmp_path: Path) -> None:
    from casework.diagrams import render

    spec = load_definition(PETITION).spec
    out = render(spec, tmp_path / "petition.png", "png")
    assert len(out.read_bytes()) > 50_000
    _real_png(out)


def test_pictures_refuse_unknown_formats(tmp_path: Path) -> None:
    spec = load_definition(PETITION).spec
    with pytest.raises(CaseworkError, match="png or svg"):
        render_with_counts(spec, {}, tmp_path / "x.pdf", "pdf")
    with pytest.raises(CaseworkError, match="png or svg"):
        render_unit_chart([], tmp_path / "x.gif", "gif")


# -- one case through time ------------------------------------------------
@pytest.mark.parametrize("which", [_escalated, _extended, _with_timer])
def test_timeline_png_is_a_real_picture(demo: tuple[Path, Engine, list[str]], tmp_path: Path,
                                        which: Any) -> None:
    _, engine, ids = demo
    case = _case(engine, ids, which)
    out = render_timeline(case, engine.history(case.id), engine.pending_timers(case.id),
                          tmp_path / "t.png", "png")
    _real_png(out)


def test_timeline_svg_shows_states_deadlines_rungs_and_timers_without_pii(
        demo: tuple[Path, Engine, list[str]], tmp_path: Path) -> None:
    _, engine, ids = demo
    texts: dict[str, str] = {}
    for label, which in (("escalated", _escalated), ("extended", _extended), ("timer", _with_timer)):
        case = _case(engine, ids, which)
        out = render_timeline(case, engine.history(case.id), engine.pending_timers(case.id),
                              tmp_path / f"{label}.svg", "svg")
        data = out.read_bytes()
        assert data.startswith(SVG) and len(data) > 20_000
        text = data.decode("utf-8")
        assert f"petition case {case.id}" in text
        assert "registered" in text and "deadline handling" in text
        pii = _pii_values(case)
        assert pii and not [v for v in pii if v in text]
        texts[label] = text
    assert all(r in texts["escalated"] for r in ("supervision_notice", "public_notice", "report_upward"))
    assert "overdue since" in texts["escalated"]
    assert "+30d extension" in texts["extended"]
    assert "return_visits (pending)" in texts["timer"]


def test_timeline_of_a_closed_case(demo: tuple[Path, Engine, list[str]], tmp_path: Path) -> None:
    _, engine, ids = demo
    case = engine.get_case(ids[0])
    assert case.final
    out = render_timeline(case, engine.history(case.id), [], tmp_path / "closed.svg", "svg")
    text = out.read_text(encoding="utf-8")
    assert "archive (final)" in text and "now archived (final)" in text


# -- per-unit chart -------------------------------------------------------
@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_unit_chart(tmp_path: Path, fmt: str) -> None:
    rows = [("county_police", 3, 1), ("county_court", 2, 0), ("xinzhuang_township", 4, 4), (None, 1, 0)]
    out = render_unit_chart(rows, tmp_path / f"units.{fmt}", fmt)
    data = out.read_bytes()
    if fmt == "png":
        _real_png(out)
    else:
        text = data.decode("utf-8")
        assert data.startswith(SVG)
        assert "county_police" in text and "3 open, 1 overdue" in text and "(no unit)" in text
    empty = render_unit_chart([], tmp_path / f"empty.{fmt}", fmt).read_bytes()
    assert empty.startswith(PNG if fmt == "png" else SVG)


# -- the command line -------------------------------------------------------
def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(run.cli, list(args), obj={})
    return result.exit_code, result.output


@needs_dot
@pytest.mark.parametrize("fmt,magic", [("png", PNG), ("svg", SVG)])
def test_cli_diagram_counts(demo: tuple[Path, Engine, list[str]], tmp_path: Path, fmt: str,
                            magic: bytes) -> None:
    db, _, _ = demo
    out = tmp_path / f"counts.{fmt}"
    args = ["--db", f"sqlite:///{db}", "diagram", "petition", "--counts", "--out", str(out)]
    code, text = _cli(*args, *(["--format", fmt] if fmt == "svg" else []))  # png is the default
    assert code == 0, text
    assert f"wrote {out}" in text
    data = out.read_bytes()
    assert data.startswith(magic)
    if fmt == "png":
        _real_png(out)
    else:
        assert "overdue" in data.decode("utf-8")


def test_cli_diagram_counts_needs_a_picture_format(demo: tuple[Path, Engine, list[str]]) -> None:
    db, _, _ = demo
    code, text = _cli("--db", f"sqlite:///{db}", "diagram", "petition", "--counts", "--format", "mermaid")
    assert code == 2 and "png or svg" in text


@pytest.mark.parametrize("fmt,magic", [("png", PNG), ("svg", SVG)])
def test_cli_timeline_writes_to_var_by_default(demo: tuple[Path, Engine, list[str]], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, fmt: str,
                                               magic: bytes) -> None:
    db, engine, ids = demo
    case = _case(engine, ids, _escalated)
    monkeypatch.setattr(run, "ROOT", tmp_path)
    extra = ["--format", fmt] if fmt == "svg" else []  # png is the default
    code, text = _cli("--db", f"sqlite:///{db}", "timeline", case.id, *extra)
    assert code == 0, text
    out = tmp_path / "var" / f"timeline-{case.id[:8]}.{fmt}"
    assert f"wrote {out}" in text
    data = out.read_bytes()
    assert data.startswith(magic)
    if fmt == "png":
        _real_png(out)
    else:
        assert case.id in data.decode("utf-8")


def test_cli_timeline_with_out_and_unknown_case(demo: tuple[Path, Engine, list[str]], tmp_path: Path) -> None:
    db, _, ids = demo
    out = tmp_path / "sub" / "t.png"
    code, text = _cli("--db", f"sqlite:///{db}", "timeline", ids[2], "--out", str(out))
    assert code == 0, text
    _real_png(out)
    code, text = _cli("--db", f"sqlite:///{db}", "timeline", "no-such-case")
    assert code == 1 and "error:" in text
