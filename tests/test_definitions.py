"""Loading workflow definitions: every problem with its file and line, content versions,
and cases that stay on the version they were opened under."""

from __future__ import annotations

from pathlib import Path

import pytest
from casework import (
    DefinitionError,
    Engine,
    FrozenClock,
    GuardRefused,
    Problem,
    load_definition,
    load_definitions,
    parse_definition,
)

from tests.petition_steps import ARCHIVIST, case_in, run

PETITION = Path(__file__).resolve().parent.parent / "workflows" / "petition.yaml"

MINI = """\
# A small workflow to break in different ways.
workflow: mini
roles: [clerk, boss]
fields:
  note: {type: text}
  ok: {type: bool}
initial: start
states:
  start: {}
  middle: {}
  done: {final: true}
transitions:
  - trigger: go
    source: start
    dest: middle
    roles: [clerk]
    required: [note]
  - trigger: finish
    source: middle
    dest: done
    roles: [boss]
    guard: ok
"""


def line_of(text: str, marker: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line of ``text`` that contains ``marker``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if marker in line]
    assert len(hits) >= nth, f"{marker!r} not in the test YAML"
    return hits[nth - 1]


def edit(old: str, new: str, text: str = MINI) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def problems_of(tmp_path: Path, text: str, name: str = "wf.yaml") -> tuple[str, list[Problem]]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert str(path) in str(info.value)
    return str(path), info.value.problems


def only_problem(tmp_path: Path, text: str) -> Problem:
    path, problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].file == path
    return problems[0]


# -- a valid file ---------------------------------------------------------------------


def test_the_small_workflow_loads(tmp_path: Path) -> None:
    path = tmp_path / "mini.yaml"
    path.write_text(MINI)
    d = load_definition(path)
    assert d.spec.workflow == "mini"
    assert d.source == str(path)
    assert len(d.version) == 12


def test_the_shipped_workflows_load() -> None:
    names = {d.spec.workflow for d in load_definitions([PETITION, PETITION.with_name(
        "complaint.yaml")])}
    assert names == {"petition", "complaint"}


# -- each kind of problem, with file and line -------------------------------------------


def test_malformed_yaml_is_reported_at_its_line(tmp_path: Path) -> None:
    text = edit("    dest: middle\n", "    dest: middle: again\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "dest: middle: again")
    assert "malformed YAML" in p.message


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    p = only_problem(tmp_path, "- just\n- a list\n")
    assert p.line == 1
    assert "mapping" in p.message


def test_unknown_state_in_a_destination_is_reported_at_the_dest_key(tmp_path: Path) -> None:
    text = edit("    dest: done\n", "    dest: nowhere\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "dest: nowhere")
    assert "'nowhere'" in p.message and "'finish'" in p.message


def test_unknown_state_in_a_source_is_reported_at_the_source(tmp_path: Path) -> None:
    text = edit("    source: middle\n", "    source: [middle, limbo]\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "limbo")
    assert "'limbo'" in p.message


def test_unreachable_state_is_reported_at_the_state(tmp_path: Path) -> None:
    text = edit("  done: {final: true}\n", "  done: {final: true}\n  island: {final: true}\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "island:")
    assert "'island'" in p.message and "unreachable" in p.message


def test_non_final_dead_end_is_reported_at_the_state(tmp_path: Path) -> None:
    text = edit("  done: {final: true}\n", "  done: {final: true}\n  stuck: {}\n")
    text = edit("transitions:\n", "transitions:\n  - {trigger: wander, source: start, "
                "dest: stuck}\n", text)
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "stuck: {}")
    assert "'stuck'" in p.message and "dead end" in p.message


def test_unknown_role_is_reported_at_its_line(tmp_path: Path) -> None:
    text = edit("    roles: [boss]\n", "    roles: [boss, king]\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "king")
    assert "unknown role 'king'" in p.message


def test_unknown_field_in_required_is_reported_at_its_line(tmp_path: Path) -> None:
    text = edit("    required: [note]\n", "    required:\n      - note\n      - colour\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "- colour")
    assert "unknown field 'colour'" in p.message


def test_guard_with_a_syntax_error_is_reported_at_the_guard(tmp_path: Path) -> None:
    text = edit("    guard: ok\n", "    guard: ok and (\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "guard: ok and (")
    assert "guard does not compile" in p.message and "syntax error" in p.message


def test_guard_naming_an_unknown_field_is_reported(tmp_path: Path) -> None:
    text = edit("    guard: ok\n", "    guard: ok and approved\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "guard: ok and approved")
    assert "'approved'" in p.message


@pytest.mark.parametrize("guard", [
    "__class__",
    "().__class__.__bases__",
    "actor.__class__",
    "len.__self__",
    '__import__("os")',
    'open("x")',
    "lambda: 1",
    "[x for x in [1]]",
    "{x: 1 for x in [1]}",
    'ok.__class__.__subclasses__()',
    'getattr(actor, "id")',
    "note[0]",
])
def test_guard_reaching_for_python_internals_is_refused_at_load(
        tmp_path: Path, guard: str) -> None:
    text = edit("    guard: ok\n", f"    guard: '{guard}'\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "    guard:")
    assert "guard does not compile" in p.message


def test_several_problems_in_one_file_are_all_listed_at_once(tmp_path: Path) -> None:
    text = edit("    roles: [clerk]\n", "    roles: [clerk, queen]\n")
    text = edit("    dest: done\n", "    dest: nowhere\n", text)
    text = edit("    guard: ok\n", "    guard: ok ===\n", text)
    text = edit("    required: [note]\n", "    required: [note, colour]\n", text)
    path, problems = problems_of(tmp_path, text)
    assert all(p.file == path for p in problems)
    found = {(p.line, next(w for w in ("queen", "nowhere", "===", "colour") if w in p.message))
             for p in problems}
    assert found == {
        (line_of(text, "queen"), "queen"),
        (line_of(text, "dest: nowhere"), "nowhere"),
        (line_of(text, "ok ==="), "==="),
        (line_of(text, "colour"), "colour"),
    }


def test_a_graph_problem_is_listed_together_with_other_problems(tmp_path: Path) -> None:
    """No problem hides another: an unreachable state is reported next to an unknown role."""
    text = edit("    roles: [boss]\n", "    roles: [boss, king]\n")
    text = edit("  done: {final: true}\n", "  done: {final: true}\n  island: {final: true}\n",
                text)
    _, problems = problems_of(tmp_path, text)
    lines = {p.line for p in problems}
    assert line_of(text, "king") in lines
    assert line_of(text, "island:") in lines


def test_problems_of_several_files_are_all_reported(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text(edit("    dest: done\n", "    dest: nowhere\n"))
    b = tmp_path / "b.yaml"
    b.write_text(edit("workflow: mini", "workflow: other").replace("roles: [boss]", "roles: [x]"))
    with pytest.raises(DefinitionError) as info:
        load_definitions([a, b])
    assert {p.file for p in info.value.problems} == {str(a), str(b)}


def test_the_same_workflow_in_two_files_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(MINI)
    b.write_text(MINI)
    with pytest.raises(DefinitionError, match="also defined"):
        load_definitions([a, b])


def test_shape_errors_are_reported_at_their_key(tmp_path: Path) -> None:
    text = edit("    roles: [boss]\n", "    roles: [boss]\n    colour: blue\n")
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, "colour: blue")


def test_engine_refuses_to_start_with_an_invalid_definition(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit("    dest: done\n", "    dest: nowhere\n"))
    with pytest.raises(DefinitionError) as info:
        Engine(f"sqlite:///{tmp_path / 'x.db'}", [bad])
    assert f"{bad}:{line_of(bad.read_text(), 'dest: nowhere')}" in str(info.value)


# -- versions -----------------------------------------------------------------------------


def test_version_ignores_comments_and_formatting() -> None:
    reformatted = """\
# the same workflow, written differently
workflow: mini   # name
roles:
  - clerk
  - boss
fields:
  note:
    type: text
  ok: {type: bool}

initial: start
states:
  start: {}
  middle: {}   # halfway
  done:
    final: true
transitions:
  - {trigger: go, source: start, dest: middle, roles: [clerk], required: [note]}
  - trigger: finish
    source: [middle]
    dest: done
    roles: boss
    guard: "ok"
"""
    assert parse_definition(reformatted, "b").version == parse_definition(MINI, "a").version


def test_version_changes_when_a_guard_changes() -> None:
    changed = edit("    guard: ok\n", "    guard: not ok\n")
    assert parse_definition(changed, "b").version != parse_definition(MINI, "a").version


def test_version_of_the_shipped_petition_file_is_stable(engine: Engine) -> None:
    assert engine.workflow("petition").version == load_definition(PETITION).version


# -- cases stay on the version they were opened under ----------------------------------------


def test_old_case_keeps_its_version_and_rules_while_new_cases_get_the_new_version(
        tmp_path: Path, sqlite_url: str, clock: FrozenClock) -> None:
    text = PETITION.read_text(encoding="utf-8")
    old_guard = 'guard: satisfaction == "satisfied"\n    set: {archived_at: now}'
    assert old_guard in text
    # The new rules let a case be archived once it has been visited, satisfied or not.
    new_text = text.replace(old_guard,
                            'guard: present(satisfaction)\n    set: {archived_at: now}')
    new_file = tmp_path / "petition_v2.yaml"
    new_file.write_text(new_text, encoding="utf-8")

    with Engine(sqlite_url, [PETITION], clock=clock) as first:
        old_version = first.workflow("petition").version
        old_case = case_in(first, "follow_up.visited")  # unsatisfied
        assert old_case.version == old_version

    with Engine(sqlite_url, [new_file], clock=clock) as second:
        new_version = second.workflow("petition").version
        assert new_version != old_version
        assert second.get_case(old_case.id).version == old_version
        # The old case still follows the old archive guard...
        with pytest.raises(GuardRefused, match="satisfied"):
            run(second, old_case.id, "archive", actor=ARCHIVIST)
        still = second.get_case(old_case.id)
        assert (still.state, still.version) == ("follow_up.visited", old_version)
        # ...while a new case gets the new version and its rules.
        new_case = case_in(second, "follow_up.visited")
        assert new_case.version == new_version
        archived = run(second, new_case.id, "archive")
        assert (archived.state, archived.version) == ("archived", new_version)
        # The old case can still move on under its own rules.
        run(second, old_case.id, "continue_work")
        run(second, old_case.id, "visit_satisfied")
        assert run(second, old_case.id, "archive").version == old_version
        assert second.verify() == []



# -- YAML syntax errors in plain words ---------------------------------------------------
@pytest.mark.parametrize("old,new,marker,column,says", [
    ("  middle: {}\n", "   middle: {}\n", "   middle:", 4,
     "bad indentation: this line does not line up with the lines above it"),
    ("    dest: middle\n", "      dest: middle\n", "      dest: middle", 7,
     "bad indentation: this line is indented under the line above"),
    ("  middle: {}\n", "\tmiddle: {}\n", "\tmiddle", 1,
     "a tab character: YAML indents with spaces only"),
    ("roles: [clerk, boss]\n", 'roles: [clerk, boss]\ntitle: "a small workflow\n', "title:", 8,
     'the quoted value that opens here is never closed (a closing " is missing)'),
    ("roles: [clerk, boss]\n", "roles: [clerk, boss\n", "roles:", 8,
     "the list '[' opened here is not closed where it should be"),
    ("  note: {type: text}\n", "  note: {type: text\n", "note:", 9,
     "the mapping '{' opened here is not closed where it should be"),
    ("  ok: {type: bool}\n", "  ok: {type: bool}\n  note: {type: int}\n", "note: {type: int}", 3,
     "the key 'note' is given twice in one mapping (first at line 5); keys must be unique"),
    ("initial: start\n", "initial start\n", "initial start", 1,
     "a key without ':' ('initial start'); write 'key: value'"),
    ("  middle: {}\n", "  middle\n  between: {}\n", "  middle", 3, "a key without ':' ('middle')"),
    ("    dest: middle\n", "    dest: middle: again\n", "dest: middle: again", 17,
     "a value holds ': ' (a colon and a space): put the value in quotes"),
], ids=["indent", "indent-under-a-value", "tab", "unclosed-quote", "unclosed-list",
        "unclosed-mapping", "duplicate-key", "missing-colon", "missing-colon-before-a-key",
        "colon-in-a-value"])
def test_a_yaml_syntax_error_says_what_is_wrong_at_its_line_and_column(
        tmp_path: Path, old: str, new: str, marker: str, column: int, says: str) -> None:
    text = edit(old, new)
    p = only_problem(tmp_path, text)
    assert p.line == line_of(text, marker), p
    assert p.message.startswith(f"malformed YAML at column {column}: {says}"), p.message
    for jargon in ("<block end>", "token", "scalar", "simple key", "stream"):
        assert jargon not in p.message


# -- the nearest known name ----------------------------------------------------------------
@pytest.mark.parametrize("old,new,says", [
    ("    roles: [boss]\n", "    roles: [bos]\n", "unknown role 'bos' (declared roles: ['boss', 'clerk']); "
                                                     "did you mean 'boss'?"),
    ("    required: [note]\n", "    required: [nte]\n", "unknown field 'nte'; did you mean 'note'?"),
    ("    guard: ok\n", "    guard: okk\n", "did you mean 'ok'?"),
    ("    dest: done\n", "    dest: don\n", "unknown state 'don'; did you mean 'done'?"),
    ("    source: start\n", "    source: strat\n", "unknown state 'strat'; did you mean 'start'?"),
    (MINI, MINI + "deadlines:\n  slow: {start: finsh, within: 5d}\n",
     "unknown trigger 'finsh' (or 'open'); did you mean 'finish'?"),
], ids=["role", "field", "guard-name", "dest", "source", "trigger"])
def test_an_unknown_name_comes_with_the_nearest_known_one(tmp_path: Path, old: str, new: str,
                                                          says: str) -> None:
    _, problems = problems_of(tmp_path, edit(old, new))
    assert any(says in p.message for p in problems), problems


def test_a_nested_state_named_by_its_last_part_is_suggested_by_its_dotted_path(tmp_path: Path) -> None:
    text = PETITION.read_text(encoding="utf-8")
    bad = edit("dest: handling.investigating", "dest: investigating", text)
    bad = edit("source: handling.investigating", "source: handling.investigatin", bad)
    _, problems = problems_of(tmp_path, bad)
    messages = [p.message for p in problems]
    assert any("unknown state 'investigating'; did you mean 'handling.investigating'?" in m
               for m in messages), messages
    assert any("unknown state 'handling.investigatin'; did you mean 'handling.investigating'?" in m
               for m in messages), messages


def test_no_suggestion_when_nothing_known_is_near(tmp_path: Path) -> None:
    p = only_problem(tmp_path, edit("    roles: [boss]\n", "    roles: [xyzzy]\n"))
    assert "unknown role 'xyzzy'" in p.message and "did you mean" not in p.message


# -- the JSON Schema for editors -------------------------------------------------------------
def _conforms(value: object, schema: dict, root: dict, where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (the subset of draft 7 the definition schema uses)."""
    if "$ref" in schema:
        return _conforms(value, root["definitions"][schema["$ref"].rsplit("/", 1)[-1]], root, where)
    if "anyOf" in schema:
        tries = [_conforms(value, s, root, where) for s in schema["anyOf"]]
        return [] if any(not t for t in tries) else min(tries, key=len)
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
             "number": (int, float), "integer": int}
    kind = schema.get("type")
    if kind is not None and not isinstance(value, kinds[kind]):
        return [f"{where}: not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                out += _conforms(v, props[k], root, f"{where}.{k}")
            elif extra is False:
                out.append(f"{where}: unknown key {k!r}")
            elif isinstance(extra, dict):
                out += _conforms(v, extra, root, f"{where}.{k}")
        out += [f"{where}: missing {k!r}" for k in schema.get("required", []) if k not in value]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += _conforms(v, schema["items"], root, f"{where}[{i}]")
    return out


def _yaml(text: str) -> object:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


def test_the_schema_accepts_the_shipped_workflows_and_refuses_unknown_keys() -> None:
    from casework.definition import definition_schema

    schema = definition_schema()
    for path in (PETITION, PETITION.with_name("complaint.yaml")):
        assert _conforms(_yaml(path.read_text(encoding="utf-8")), schema, schema) == [], path
    assert _conforms(_yaml(MINI), schema, schema) == []
    assert _conforms(_yaml(edit("    dest: done\n", "    dest: done\n    destination: x\n")),
                     schema, schema) == ["$.transitions[1]: unknown key 'destination'"]
    assert _conforms(_yaml(edit("  ok: {type: bool}\n", "  ok: {type: boolean}\n")), schema, schema)
    warn = schema["definitions"]["DeadlineSpec"]["properties"]["warn"]
    assert _conforms(["50%", 0.8], warn, schema) == [] and _conforms("80%", warn, schema) == []
    assert _conforms("registered", schema["definitions"]["TransitionSpec"]["properties"]["source"],
                     schema) == []
