"""Pictures: the workflow with its open and overdue cases, one case's timeline, the unit chart.

Drawn from the demo's year of 12 petition cases (run once for the module). Graphviz
pictures are skipped only when ``dot`` is missing outside CI; matplotlib needs nothing.
Without the ``pictures`` extra, drawing says which extra to install, and the rest of
casework (the command line included) works as before.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from casework import Case, CaseworkError, Engine, FrozenClock, load_definition
from casework.demo import WORKFLOWS, run_demo
from casework.errors import MissingExtra
from casework.views import (
    GraphvizNotFound,
    render,
    render_timeline,
    render_unit_chart,
    render_with_counts,
    workflow_graph,
)
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tests.conftest import COMPLAINT, PETITION, ROOT
from tests.helpers import run_cli

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
@needs_dot
@pytest.mark.parametrize("fmt,magic", [("png", PNG), ("svg", SVG)])
def test_cli_diagram_counts(demo: tuple[Path, Engine, list[str]], tmp_path: Path, fmt: str,
                            magic: bytes) -> None:
    db, _, _ = demo
    out = tmp_path / f"counts.{fmt}"
    args = ["--db", f"sqlite:///{db}", "diagram", "petition", "--counts", "--out", str(out)]
    r = run_cli(*args, *(["--format", fmt] if fmt == "svg" else []))  # png is the default
    assert r.code == 0, r.output
    assert f"wrote {out}" in r.output
    data = out.read_bytes()
    assert data.startswith(magic)
    if fmt == "png":
        _real_png(out)
    else:
        assert "overdue" in data.decode("utf-8")


def test_cli_diagram_counts_needs_a_picture_format(demo: tuple[Path, Engine, list[str]]) -> None:
    db, _, _ = demo
    r = run_cli("--db", f"sqlite:///{db}", "diagram", "petition", "--counts", "--format", "mermaid")
    assert r.code == 2 and "png or svg" in r.output


@pytest.mark.parametrize("fmt,magic", [("png", PNG), ("svg", SVG)])
def test_cli_timeline_writes_to_var_by_default(demo: tuple[Path, Engine, list[str]], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, fmt: str,
                                               magic: bytes) -> None:
    db, engine, ids = demo
    case = _case(engine, ids, _escalated)
    monkeypatch.chdir(tmp_path)
    extra = ["--format", fmt] if fmt == "svg" else []  # png is the default
    r = run_cli("--db", f"sqlite:///{db}", "timeline", case.id, *extra)
    assert r.code == 0, r.output
    out = Path("var") / f"timeline-{case.id[-12:]}.{fmt}"
    assert f"wrote {out}" in r.output
    data = out.read_bytes()
    assert data.startswith(magic)
    if fmt == "png":
        _real_png(out)
    else:
        assert case.id in data.decode("utf-8")


def test_cli_timeline_with_out_and_unknown_case(demo: tuple[Path, Engine, list[str]], tmp_path: Path) -> None:
    db, _, ids = demo
    out = tmp_path / "sub" / "t.png"
    r = run_cli("--db", f"sqlite:///{db}", "timeline", ids[2], "--out", str(out))
    assert r.code == 0, r.output
    _real_png(out)
    r = run_cli("--db", f"sqlite:///{db}", "timeline", "no-such-case")
    assert r.code == 1 and "error:" in r.output


def test_timelines_of_cases_opened_in_the_same_second_go_to_different_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'two.db'}"
    with Engine(db, [PETITION, COMPLAINT], clock=FrozenClock()) as engine:  # one instant for both
        ids = [engine.open_case("petition", {"petitioner_name": n, "channel": "visit",
                                             "source": "city", "summary": "s"}, actor="clerk:li").id
               for n in ("A", "B")]
    assert ids[0][:8] == ids[1][:8]  # the time-ordered start of the ids is the same
    monkeypatch.chdir(tmp_path)
    for cid in ids:
        r = run_cli("--db", db, "timeline", cid, "--format", "svg")
        assert r.code == 0, r.output
    files = sorted(p.name for p in (tmp_path / "var").glob("timeline-*.svg"))
    assert files == sorted(f"timeline-{cid[-12:]}.svg" for cid in ids)


# -- without the pictures extra ---------------------------------------------
def test_drawing_without_matplotlib_names_the_extra_to_install(
        demo: tuple[Path, Engine, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, engine, ids = demo
    case = engine.get_case(ids[0])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    with pytest.raises(MissingExtra, match=r"'pictures' extra \(matplotlib is not installed\)") as e:
        render_timeline(case, engine.history(case.id), [], tmp_path / "t.png")
    assert e.value.extra == "pictures"
    with pytest.raises(MissingExtra, match=r"pip install 'casework\[pictures\]'"):
        render_unit_chart([("county_court", 1, 0)], tmp_path / "u.png")
    r = run_cli("--db", f"sqlite:///{db}", "timeline", case.id, "--out", tmp_path / "t.png")
    assert r.code == 1 and "error: drawing a timeline needs the 'pictures' extra" in r.output
    assert not (tmp_path / "t.png").exists()


def test_drawing_without_the_graphviz_package_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)
    spec = load_definition(PETITION).spec
    with pytest.raises(MissingExtra, match=r"'pictures' extra \(graphviz is not installed\)"):
        render(spec, tmp_path / "p.png")
    r = run_cli("diagram", "petition", "--format", "svg", "--out", tmp_path / "p.svg")
    assert r.code == 1 and "pip install 'casework[pictures]'" in r.output
    r = run_cli("diagram", "petition")  # Mermaid needs neither
    assert r.code == 0 and "stateDiagram-v2" in r.output


def test_drawing_without_graphviz_dot_names_the_system_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name, *a, **k: None)
    spec = load_definition(PETITION).spec
    with pytest.raises(GraphvizNotFound, match=r"Graphviz's 'dot' program.*apt-get install graphviz"):
        render(spec, tmp_path / "p.png")
    r = run_cli("diagram", "petition", "--format", "png", "--out", tmp_path / "p.png")
    assert r.code == 1 and r.output.startswith("error: drawing PNG or SVG needs Graphviz's 'dot'")


def test_casework_and_its_command_line_work_without_the_pictures_extra(tmp_path: Path) -> None:
    script = f"""
import sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {{"matplotlib", "graphviz"}}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None

sys.meta_path.insert(0, NotInstalled())
import casework
from casework.cli import cli
from click.testing import CliRunner

db = "sqlite:///{tmp_path / 'lean.db'}"
run = lambda *a: CliRunner().invoke(cli, list(a), catch_exceptions=False)
assert run("validate", "{PETITION}").exit_code == 0
assert "stateDiagram-v2" in run("diagram", "petition").output
opened = run("--db", db, "open", "petition", "--actor", "clerk:li", "-d", "petitioner_name=A",
             "-d", "channel=visit", "-d", "source=city", "-d", "summary=s")
assert opened.exit_code == 0, opened.output
shown = run("--db", db, "show", opened.stdout.strip())
assert shown.exit_code == 0 and "state: registered" in shown.output, shown.output
drawn = run("--db", db, "timeline", opened.stdout.strip(), "--out", "{tmp_path / 't.png'}")
assert drawn.exit_code == 1 and "casework[pictures]" in drawn.output, drawn.output
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {{"matplotlib", "graphviz"}})
assert not loaded, loaded
print("lean ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lean ok" in done.stdout


def test_the_core_never_imports_the_views() -> None:
    """Presentation (the views, the command line, the HTTP service and its console, the
    demo) depends on the engine, never the other way round."""
    offenders = []
    for path in sorted([*(ROOT / "engine").rglob("*.py"), *(ROOT / "persistence").rglob("*.py")]):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] in (("engine", "views"), ("engine", "http"), ("engine", "cli")) or (
                rel == Path("engine/demo.py")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                names = [f"{'.' * node.level}{node.module or ''}", *(a.name for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.split(".")[-1] == "views" or ".views" in n for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
