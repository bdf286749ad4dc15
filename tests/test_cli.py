"""The command line: validate, schema, diagram, open, fire, show, report, demo, settings."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from casework.cli import Defaults, packaged_settings
from rich.cells import cell_len

from tests.conftest import PETITION, ROOT
from tests.helpers import run_cli

OPEN = ["open", "petition", "--actor", "clerk:li", "-d", "petitioner_name=Sima Guang",
        "-d", "channel=letter", "-d", "source=direct", "-d", "summary=land"]


def _open(db: str, *data: str) -> str:
    r = run_cli("--db", db, *OPEN, *data)
    assert r.code == 0, r.output
    return r.out.strip()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_validate_accepts_the_shipped_workflows() -> None:
    r = run_cli("validate", PETITION, ROOT / "workflows" / "complaint.yaml")
    assert r.code == 0
    assert "workflow 'petition' version" in r.out and "workflow 'complaint' version" in r.out


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
    r = run_cli("validate", bad)
    assert r.code == 1
    assert f"{bad}:10:" in r.err and "unknown state 'nowhere'" in r.err
    assert f"{bad}:11:" in r.err and "unknown role 'boss'" in r.err
    assert f"{bad}:12:" in r.err and "guard does not compile" in r.err


def test_validate_suggests_the_state_meant_by_its_dotted_path(tmp_path: Path) -> None:
    bad = tmp_path / "petition.yaml"
    bad.write_text(PETITION.read_text(encoding="utf-8").replace(
        "dest: handling.investigating", "dest: investigating", 1), encoding="utf-8")
    r = run_cli("validate", bad)
    assert r.code == 1
    assert "unknown state 'investigating'; did you mean 'handling.investigating'?" in r.err


def test_validate_explains_a_bad_indent_in_plain_words(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow: bad\ninitial: a\nstates:\n  a: {}\n   b: {final: true}\n")
    r = run_cli("validate", bad)
    assert r.code == 1
    assert f"{bad}:5: malformed YAML at column 4: bad indentation" in r.err
    assert "<block end>" not in r.err


def test_schema_is_written_to_stdout_and_to_a_file(tmp_path: Path) -> None:
    r = run_cli("schema")
    assert r.code == 0
    schema = json.loads(r.out)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert {"workflow", "states", "transitions", "fields"} <= set(schema["properties"])
    out = tmp_path / "editor" / "casework.schema.json"
    r = run_cli("schema", "--out", out)
    assert r.code == 0 and f"wrote {out}" in r.out
    assert json.loads(out.read_text(encoding="utf-8")) == schema


def test_diagram_prints_mermaid_with_nested_states() -> None:
    r = run_cli("diagram", "petition")
    assert r.code == 0
    assert "stateDiagram-v2" in r.out
    assert "state handling {" in r.out
    assert "registered --> accepted: accept" in r.out


@pytest.mark.skipif(shutil.which("dot") is None and os.environ.get("CI") != "true",
                    reason="Graphviz is not installed")
@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("svg", b"<?xml")])
def test_diagram_draws_png_and_svg_with_graphviz(tmp_path: Path, fmt: str, magic: bytes) -> None:
    out = tmp_path / f"petition.{fmt}"
    r = run_cli("diagram", "petition", "--format", fmt, "--out", out)
    assert r.code == 0
    data = out.read_bytes()
    assert data.startswith(magic)
    assert len(data) > 10_000


def test_open_fire_show_round_trip_masks_pii(db: str) -> None:
    case_id = _open(db)
    r = run_cli("--db", db, "fire", case_id, "accept", "--actor", "triage:zhao")
    assert r.code == 0 and "accepted" in r.out
    r = run_cli("--db", db, "show", case_id, "--actor", "leader:wang")
    assert r.code == 0
    assert "state: accepted" in r.out
    assert "Sima Guang" not in r.out
    assert _row(r.out, "petitioner_name") == ["petitioner_name", "***"]
    assert _row(r.out, "assign")[:3] == ["yes", "transition", "assign"]


def _row(text: str, first: str) -> list[str]:
    """The cells of the first table row holding a cell equal to ``first``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if first in cells:
            return cells
    raise AssertionError(f"no row with {first!r} in:\n{text}")


def test_show_as_json_and_csv_masks_pii(db: str) -> None:
    case_id = _open(db, "-d", "petitioner_phone=13700001111")
    r = run_cli("--db", db, "show", case_id, "--actor", "triage:zhao", "--format", "json")
    assert r.code == 0
    shown = json.loads(r.out)
    assert shown["case"]["id"] == case_id and shown["case"]["state"] == "registered"
    assert shown["case"]["data"]["petitioner_phone"] == "***"
    assert shown["history"][0]["changes"]["petitioner_name"] == "***"
    assert {o["name"] for o in shown["options"]} >= {"accept"}
    r = run_cli("--db", db, "show", case_id, "--format", "csv")
    assert r.code == 0
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [(row["seq"], row["kind"], row["to_state"]) for row in rows] == [("1", "open", "registered")]
    assert json.loads(rows[0]["changes"])["petitioner_phone"] == "***"
    assert "13700001111" not in r.out and "Sima Guang" not in r.out


def test_a_refused_command_prints_the_rule_and_exits_1(db: str) -> None:
    r = run_cli("--db", db, "fire", _open(db), "archive", "--actor", "clerk:li")
    assert r.code == 1
    assert "[state]" in r.err and "'archive'" in r.err


# -- values typed by the field ------------------------------------------------------------
def test_data_values_are_typed_by_the_fields_of_the_workflow(db: str) -> None:
    case_id = _open(db, "-d", "petitioner_phone=13700001111", "-d", "group_petition=true",
                    "-d", "petition_count=3", "-d", "receiving_leader=007")
    r = run_cli("--db", db, "fire", case_id, "accept", "--actor", "triage:zhao")
    assert r.code == 0, r.output
    r = run_cli("--db", db, "fire", case_id, "assign", "--actor", "leader:wang", "-d", "leader=wang",
                "-d", "handler=liu", "-d", "unit=court", "-d", "due_date=2026-05-01",
                "-d", "target=resolve", "-d", 'assisting_units=["police", "justice_bureau"]')
    assert r.code == 0, r.output
    r = run_cli("--db", db, "fire", case_id, "funds_raised", "--actor", "leader:wang",
                "-d", "amount=1500.5", "-d", "funded_by=2026")
    assert r.code == 0, r.output
    r = run_cli("--db", db, "show", case_id, "--format", "json")
    data = json.loads(r.out)["case"]["data"]
    assert (data["group_petition"], data["petition_count"], data["receiving_leader"]) == (True, 3, "007")
    assert data["assisting_units"] == ["police", "justice_bureau"]
    funds = json.loads(r.out)["history"][-1]["details"]
    assert (funds["amount"], funds["funded_by"]) == (1500.5, "2026")
    from casework import Engine

    with Engine(db, [PETITION]) as engine:
        assert engine.get_case(case_id).data["petitioner_phone"] == "13700001111"


def test_a_value_that_does_not_fit_its_field_is_refused_naming_the_field(db: str) -> None:
    r = run_cli("--db", db, *OPEN, "-d", "petition_count=many")
    assert r.code == 1 and "petition_count" in r.err and "Traceback" not in r.output
    r = run_cli("--db", db, *OPEN, "-d", "no_such_field=1")
    assert r.code == 1 and "no_such_field" in r.err
    r = run_cli("--db", db, *OPEN, "-d", "assisting_units=police")
    assert r.code == 2 and "assisting_units is a list: write it as JSON" in r.err
    r = run_cli("--db", db, *OPEN, "--json", "{not json")
    assert r.code == 2 and "--json" in r.err and "not valid JSON" in r.err
    r = run_cli("--db", db, *OPEN, "-d", "channel")
    assert r.code == 2 and "is not KEY=VALUE" in r.err


# -- tables that know Chinese ---------------------------------------------------------------
def _tables(text: str) -> list[list[str]]:
    """Each table of ``text`` as its lines: runs of lines with column borders."""
    tables: list[list[str]] = []
    run: list[str] = []
    for line in [*text.splitlines(), ""]:
        if "│" in line or "┼" in line:
            run.append(line)
        elif run:
            tables.append(run)
            run = []
    return tables


def _assert_aligned(table: list[str], *, right_edge: bool = False) -> None:
    """The column borders of every line of ``table`` sit in the same terminal cells (and,
    with ``right_edge``, every line ends in the same cell: a right-aligned last column)."""

    def borders(line: str) -> tuple[int, ...]:
        return tuple(cell_len(line[:i]) for i, ch in enumerate(line) if ch in "│┼")

    assert len({borders(line) for line in table}) == 1, "\n".join(table)
    if right_edge:
        assert len({cell_len(line) for line in table if "┼" not in line}) == 1, "\n".join(table)


def test_report_and_show_tables_align_chinese_and_keep_long_names_whole(db: str) -> None:
    units = ["新莊鎮人民政府", "xinzhuang_township", "縣法院"]
    for unit in units:
        case_id = _open(db)
        assert run_cli("--db", db, "fire", case_id, "accept", "--actor", "triage:zhao").code == 0
        r = run_cli("--db", db, "fire", case_id, "assign", "--actor", "leader:wang",
                    "-d", "leader=王建國", "-d", "handler=liu", "-d", f"unit={unit}",
                    "-d", "due_date=2026-05-01", "-d", "target=依法解決並息訴罷訪")
        assert r.code == 0, r.output
    r = run_cli("--db", db, "report", "--by", "unit")
    assert r.code == 0, r.output
    tables = _tables(r.out)
    assert len(tables) == 2  # the figures, the time in each state
    _assert_aligned(tables[0], right_edge=True)
    _assert_aligned(tables[1], right_edge=True)
    header = _row(r.out, "figure")
    assert set(units) <= set(header)
    assert _row(r.out, "cases received (接訪)")[1:] == ["3", "1", "1", "1"]
    assert "…" not in r.out

    r = run_cli("--db", db, "show", case_id, "--actor", "leader:王建國")
    assert r.code == 0, r.output
    tables = _tables(r.out)
    assert len(tables) == 5  # data, history, what each event set, the deadlines, the options
    for table in tables:
        _assert_aligned(table)
    assert _row(r.out, "unit") == ["unit", "縣法院"]
    assert _row(r.out, "target") == ["target", "依法解決並息訴罷訪"]
    assert "…" not in r.out


def test_report_as_csv_and_json(db: str) -> None:
    _open(db)
    r = run_cli("--db", db, "report", "--where", "source=direct", "--format", "csv")
    assert r.code == 0
    rows = {row["figure"]: row for row in csv.DictReader(io.StringIO(r.out))}
    assert float(rows["received"]["total"]) == 1.0
    r = run_cli("--db", db, "report", "--where", "received_by_head=false", "--format", "json")
    assert r.code == 0
    shown = json.loads(r.out)
    assert shown["where"] == {"received_by_head": [False]}
    assert shown["figures"]["received"]["value"] == 0.0


# -- settings: the packaged default, CASEWORK_CONFIG, --config -----------------------------
def test_without_settings_the_packaged_ones_are_used_with_the_database_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CASEWORK_CONFIG", raising=False)
    package = packaged_settings().parent.parent
    r = run_cli(*OPEN)
    assert r.code == 0, r.output
    from casework import Engine

    with Engine(f"sqlite:///{tmp_path / 'var' / 'casework.db'}", [PETITION]) as engine:
        assert engine.get_case(r.out.strip()).state == "registered"
    assert not list(package.glob("config/*.db")) and not list(package.glob("*.db"))


def test_casework_config_names_the_settings_and_config_overrides_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_db, flag_db = tmp_path / "from-env.db", tmp_path / "from-flag.db"
    for name, path in (("env.toml", env_db), ("flag.toml", flag_db)):
        (tmp_path / name).write_text(f'[database]\nurl = "sqlite:///{path.name}"\n'
                                     f'[workflows]\npaths = ["{PETITION}"]\n', encoding="utf-8")
    monkeypatch.setenv("CASEWORK_CONFIG", str(tmp_path / "env.toml"))
    assert run_cli(*OPEN, defaults=Defaults(config=packaged_settings())).code == 0
    assert env_db.is_file() and not flag_db.exists()
    assert run_cli("--config", tmp_path / "flag.toml", *OPEN).code == 0
    assert flag_db.is_file()


def test_an_unreadable_settings_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    r = run_cli("--config", tmp_path / "missing.toml", *OPEN)
    assert r.code == 1 and r.err.startswith("error: ") and "missing.toml" in r.err


def test_a_database_that_is_not_a_url_is_refused_naming_where_it_came_from(tmp_path: Path) -> None:
    r = run_cli("--db", "cases.db", "verify")
    assert r.code == 2 and "--db: 'cases.db' is not a database URL" in r.err
    settings = tmp_path / "casework.toml"
    settings.write_text('[database]\nurl = "cases.db"\n', encoding="utf-8")
    r = run_cli("--config", settings, "verify")
    assert r.code == 1 and f"{settings}: database.url" in r.err and "not a database URL" in r.err


def test_run_py_hands_every_other_command_to_the_package_cli() -> None:
    env = {**os.environ, "CASEWORK_NO_VENV": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert {"test", "typecheck", "bench", "demo", "open", "fire", "show", "schema", "report",
            "validate", "diagram", "timeline", "db", "import", "export"} <= listed


# -- the demo -----------------------------------------------------------------------------
def test_demo_runs_a_year_of_the_twelve_handed_down_cases(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run_cli("demo")
    assert r.code == 0
    out = r.out
    assert f"casework demo on {Path('var') / 'demo.db'}" in out  # var/ of the working directory
    assert (tmp_path / "var" / "demo.db").is_file()
    assert "Handed down 12; resolved and archived 8; still in progress 4; closure rate 67%" in out
    assert "refused as it should be: [guard]" in out
    assert "supervision report" in out
    assert "escalation 3 (supervision_notice, public_notice, report_upward)" in out
    assert "state: archived" in out and "state: review." in out
    assert _row(out, "handed down from above (交辦)")[1] == "12"
    assert "hash chains: all intact" in out


def test_demo_figures_come_from_the_recorded_cases(tmp_path: Path) -> None:
    from casework.demo import run_demo

    figures = run_demo(tmp_path / "demo.db", echo=lambda _: None)
    assert (figures["handed_down"], figures["resolved"], figures["in_progress"]) == (12, 8, 4)
    assert round(figures["closure_rate"], 2) == 0.67
