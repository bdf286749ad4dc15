"""The command line: validate, diagram, open, fire, show, demo."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import run
from tests.conftest import PETITION, ROOT


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(run.cli, list(args), obj={}, catch_exceptions=False)
    return result.exit_code, result.output


def test_validate_accepts_the_shipped_workflows() -> None:
    code, out = _cli("validate", str(PETITION), str(ROOT / "workflows" / "complaint.yaml"))
    assert code == 0
    assert "workflow 'petition' version" in out and "workflow 'complaint' version" in out


def test_validate_lists_every_problem_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "workflow: bad\n"
        "roles: [clerk]\n"
        "initial: a\n"
        "states:\n"
        "  a: {}\n"
        "  b: {final: true}\n"
        "transitions:\n"
        "  - trigger: go\n"
        "    source: a\n"
        "    dest: nowhere\n"
        "    roles: [boss]\n"
        "    guard: 'x ==='\n"
    )
    code, out = _cli("validate", str(bad))
    assert code == 1
    assert f"{bad}:10:" in out and "unknown state 'nowhere'" in out
    assert f"{bad}:11:" in out and "unknown role 'boss'" in out
    assert f"{bad}:12:" in out and "guard does not compile" in out


def test_diagram_prints_mermaid_with_nested_states() -> None:
    code, out = _cli("diagram", "petition")
    assert code == 0
    assert "stateDiagram-v2" in out
    assert "state handling {" in out
    assert "registered --> accepted: accept" in out


@pytest.mark.skipif(shutil.which("dot") is None and os.environ.get("CI") != "true",
                    reason="Graphviz is not installed")
@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("svg", b"<?xml")])
def test_diagram_draws_png_and_svg_with_graphviz(tmp_path: Path, fmt: str, magic: bytes) -> None:
    out = tmp_path / f"petition.{fmt}"
    code, _ = _cli("diagram", "petition", "--format", fmt, "--out", str(out))
    assert code == 0
    data = out.read_bytes()
    assert data.startswith(magic)
    assert len(data) > 10_000


def test_open_fire_show_round_trip_masks_pii(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out = _cli("--db", db, "open", "petition", "--actor", "clerk:li",
                     "-d", "petitioner_name=Sima Guang", "-d", "channel=letter",
                     "-d", "source=direct", "-d", "summary=land")
    assert code == 0
    case_id = out.strip()
    code, out = _cli("--db", db, "fire", case_id, "accept", "--actor", "triage:zhao")
    assert code == 0 and "accepted" in out
    code, out = _cli("--db", db, "show", case_id, "--actor", "leader:wang")
    assert code == 0
    assert "state: accepted" in out
    assert "Sima Guang" not in out and "petitioner_name: ***" in out
    assert "yes transition assign" in out


def test_a_refused_command_prints_the_rule_and_exits_1(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    _, out = _cli("--db", db, "open", "petition", "--actor", "clerk:li", "-d", "petitioner_name=X",
                  "-d", "channel=visit", "-d", "source=city", "-d", "summary=s")
    result = CliRunner().invoke(run.cli, ["--db", db, "fire", out.strip(), "archive",
                                          "--actor", "clerk:li"], obj={})
    assert result.exit_code == 1
    assert "[state]" in result.output and "'archive'" in result.output


def test_demo_runs_a_year_of_the_twelve_handed_down_cases(tmp_path: Path) -> None:
    code, out = _cli("demo", "--db", str(tmp_path / "demo.db"))
    assert code == 0
    assert "Handed down 12; resolved and archived 8; still in progress 4; closure rate 67%" in out
    assert "refused as it should be: [guard]" in out
    assert "supervision report" in out
    assert "escalation 3 (supervision_notice, public_notice, report_upward)" in out
    assert "state: archived" in out and "state: review." in out
    assert "hash chains: all intact" in out


def test_demo_figures_come_from_the_recorded_cases(tmp_path: Path) -> None:
    from demo import run_demo

    figures = run_demo(tmp_path / "demo.db", echo=lambda _: None)
    assert (figures["handed_down"], figures["resolved"], figures["in_progress"]) == (12, 8, 4)
    assert round(figures["closure_rate"], 2) == 0.67
