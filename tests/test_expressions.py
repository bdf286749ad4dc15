"""The guard language, as a definition uses it: what a guard computes on a case, and what a
definition may not write (refused when the definition is loaded, naming the guard).

Each guard below is the guard of the one transition of a small workflow; a case holding the
given fields is opened and the transition fired (with the given input, by the leader
``chen`` of the unit ``court``, on 4 February 2026): the guard holds when the case moves,
and is false when the command is refused by it. A guard that cannot be evaluated is
refused too, and says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from casework import (
    DefinitionError,
    Engine,
    FrozenClock,
    GuardRefused,
    TriggerOption,
    parse_definition,
)

FIELDS = {"satisfaction": "string", "leader": "string", "extended": "bool", "flagged": "bool",
          "extension_days": "int", "channel": "string", "replied_at": "datetime",
          "amount": "number", "attendees": "list", "note": "string", "items": "list"}
NOW = datetime(2026, 2, 4, 9, 0, tzinfo=UTC)  # a guard's `now`: "2026-02-04T09:00:00+00:00"
LEADER = "leader:chen@court"


def definition(guard: str, *, required: tuple[str, ...] = ()) -> str:
    """A workflow whose transition ``check`` (open -> passed) has the guard ``guard``; a case
    may be opened with any field, and ``check`` takes any field as input."""
    fields = "\n".join(f"  {name}: {{type: {kind}}}" for name, kind in FIELDS.items())
    optional = ", ".join(f for f in FIELDS if f not in required)
    return f"""\
workflow: probe
title: A guard on trial
roles: [clerk, leader]
initial: open
fields:
{fields}
open:
  optional: [{", ".join(FIELDS)}]
states:
  open: {{description: open}}
  passed: {{final: true, description: the guard held}}
transitions:
  - trigger: check
    source: open
    dest: passed
    roles: [leader]
    required: [{", ".join(required)}]
    optional: [{optional}]
    guard: {json.dumps(guard)}
"""


class NotEvaluated(Exception):
    """The guard could not be evaluated (the command was refused saying so)."""


def _engine(db: str, guard: str, functions: Mapping[str, Callable[..., Any]] | None = None,
            required: tuple[str, ...] = ()) -> Engine:
    loaded = parse_definition(definition(guard, required=required), "probe.yaml",
                              functions=functions or {})
    return Engine(db, [loaded], clock=FrozenClock(NOW), functions=functions or {})


@pytest.fixture(scope="module")
def probe_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file for the module's engines (each loads its own version of ``probe``)."""
    return f"sqlite:///{tmp_path_factory.mktemp('guards') / 'cases.db'}"


@pytest.fixture
def holds(probe_db: str) -> Callable[..., bool]:
    """``holds(guard, input={...}, functions={...}, **fields)``: whether ``guard`` lets the
    leader's command through on a case holding ``fields``."""

    def check(guard: str, *, input: Mapping[str, Any] | None = None,
              functions: Mapping[str, Callable[..., Any]] | None = None, **fields: Any) -> bool:
        with _engine(probe_db, guard, functions) as engine:
            case = engine.open_case("probe", fields, actor="clerk:li")
            try:
                moved = engine.fire(case.id, "check", actor=LEADER, data=dict(input or {}))
            except GuardRefused as e:
                if "could not be evaluated" in e.reason:
                    raise NotEvaluated(e.reason) from None
                assert engine.get_case(case.id).state == "open"
                return False
            assert moved.state == "passed"
            return True

    return check


def refused(source: str, fragment: str = "") -> str:
    """Load a definition with the guard ``source``: refused, naming the guard; the message."""
    with pytest.raises(DefinitionError) as info:
        parse_definition(definition(source), "probe.yaml")
    [problem] = info.value.problems
    assert problem.message.startswith("guard does not compile"), problem
    assert problem.line is not None
    assert fragment in problem.message
    return problem.message


# -- what it computes ---------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("extension_days <= 30", True),
    ("extension_days < 20", False),
    ("extension_days >= 20 and extension_days <= 30", True),
    ("extension_days == 20", True),
    ("extension_days != 20", False),
    ("extension_days > 20", False),
    ("extension_days + 10 == 30", True),
    ("extension_days * 2 - 1 == 39", True),
    ("extension_days % 7 == 6", True),
    ("-extension_days < 0", True),
])
def test_comparisons_and_arithmetic(holds: Callable[..., bool], source: str,
                                    expected: bool) -> None:
    assert holds(source, extension_days=20) is expected


def test_string_equality(holds: Callable[..., bool]) -> None:
    assert holds('satisfaction == "satisfied"', satisfaction="satisfied") is True
    assert holds('satisfaction == "satisfied"', satisfaction="unsatisfied") is False
    assert holds('satisfaction == "satisfied"') is False  # unset field is None
    assert holds('satisfaction != "satisfied"') is True


@pytest.mark.parametrize(("a", "b", "expected"), [
    (True, True, (True, True)), (True, False, (False, True)),
    (False, True, (False, True)), (False, False, (False, False)),
])
def test_and_or(holds: Callable[..., bool], a: bool, b: bool,
                expected: tuple[bool, bool]) -> None:
    assert (holds("extended and flagged", extended=a, flagged=b),
            holds("extended or flagged", extended=a, flagged=b)) == expected


def test_not_and_none_fields(holds: Callable[..., bool]) -> None:
    assert holds("not extended") is True
    assert holds("not extended", extended=True) is False
    assert holds("extended is None") is True
    assert holds("extended is not None", extended=False) is True


def test_and_short_circuits_like_a_guard_should(holds: Callable[..., bool]) -> None:
    # replied_at is None: days_between would fail, but `and` never gets there.
    assert holds("replied_at and days_between(replied_at, now) <= 30") is False


def test_in_and_not_in_lists(holds: Callable[..., bool]) -> None:
    assert holds('channel in ["visit", "letter"]', channel="visit") is True
    assert holds('channel in ["visit", "letter"]', channel="online") is False
    assert holds('channel not in ("phone", "online")', channel="letter") is True
    assert holds('"court" in attendees', attendees=["court", "police"]) is True


def test_conditional_expression(holds: Callable[..., bool]) -> None:
    assert holds('("many" if amount > 10 else "few") == "many"', amount=11) is True
    assert holds('("many" if amount > 10 else "few") == "many"', amount=9) is False


def test_days_between_whole_and_fractional_days(holds: Callable[..., bool]) -> None:
    assert holds("days_between(replied_at, now) == 30", replied_at="2026-01-05T09:00:00Z")
    assert holds("days_between(replied_at, now) <= 30", replied_at="2026-01-05T09:00:00Z")
    assert not holds("days_between(replied_at, now) <= 30", replied_at="2026-01-05T08:59:00Z")
    assert holds('days_between("2026-01-01", "2026-01-02T12:00:00") == 1.5')
    assert holds('days_between("2026-01-10", "2026-01-01") == -9')


def test_days_between_mixes_aware_and_naive_times(holds: Callable[..., bool]) -> None:
    assert holds('days_between("2026-01-01T00:00:00+00:00", "2026-01-03T00:00:00") == 2')


def test_days_between_converts_offsets_instead_of_dropping_them(
        holds: Callable[..., bool]) -> None:
    assert holds('days_between("2026-06-01T10:00:00+08:00", "2026-06-01T02:00:00+00:00") == 0')
    assert holds('days_between("2026-06-01T00:00:00+08:00", "2026-06-02T00:00:00Z") * 24 == 32')


def test_days_between_a_non_date_fails_at_evaluation(holds: Callable[..., bool]) -> None:
    with pytest.raises(NotEvaluated):
        holds("days_between(note, now) > 1", note="not a date")
    with pytest.raises(NotEvaluated):
        holds("days_between(extension_days, now) > 1", extension_days=42)


def test_whitelisted_functions(holds: Callable[..., bool]) -> None:
    assert holds("len(attendees) >= 2", attendees=["a", "b"]) is True
    assert holds("max(amount, 10) == 10", amount=3) is True
    assert holds("min(amount, 10) == 3", amount=3) is True
    assert holds("abs(amount) == 3", amount=-3) is True
    assert holds('lower(channel) == "visit"', channel="VISIT") is True
    assert holds('upper(channel) == "VISIT"', channel="visit") is True
    assert holds("present(note)", note="x") is True
    assert holds("present(note)", note="") is False
    assert holds("present(attendees)", attendees=[]) is False
    assert holds('date(replied_at) == "2026-01-05"', replied_at="2026-01-05T09:00:00Z") is True


def test_actor_id_and_roles(holds: Callable[..., bool]) -> None:
    assert holds("actor.id == leader", leader="chen") is True
    assert holds("actor.id == leader", leader="ma") is False
    assert holds('"leader" in actor.roles') is True
    assert holds('"clerk" in actor.roles') is False
    assert holds('actor.unit == "court"') is True


def test_input_and_case_namespaces(holds: Callable[..., bool]) -> None:
    assert holds("input.extension_days == 5", input={"extension_days": 5}) is True
    assert holds("input.extension_days == 5", extension_days=5) is False  # the case's, not input
    assert holds('case.leader == "chen"', leader="chen") is True
    assert holds('case.leader == "chen"', input={"leader": "chen"}) is False  # input, not case


def test_input_field_named_like_a_dict_method_reads_the_field(holds: Callable[..., bool]) -> None:
    """``input.items`` is the field ``items``, not the mapping's ``items`` method."""
    assert holds("input.items == [1, 2]", input={"items": [1, 2]}) is True
    assert holds("len(case.items) == 2", items=["a", "b"]) is True


def test_division_by_zero_is_an_expression_error(holds: Callable[..., bool]) -> None:
    with pytest.raises(NotEvaluated):
        holds("amount / extension_days > 1", amount=1, extension_days=0)


def test_host_function_can_be_registered(holds: Callable[..., bool]) -> None:
    def in_february(s: str) -> bool:
        return s.startswith("2026-02")

    assert holds("is_holiday(now)", functions={"is_holiday": in_february}) is True
    assert holds("not is_holiday(now)", functions={"is_holiday": in_february}) is False
    refused("is_holiday(now)", "unknown function 'is_holiday'")  # unless registered


def test_the_fields_a_guard_reads_decide_whether_it_waits_for_the_input(probe_db: str) -> None:
    """A guard that reads a field the command must bring (``leader``) cannot be judged before
    the command: it is offered, to be checked against the input. One that reads only what
    the case holds (``extended``) is judged at once."""
    def option(guard: str) -> TriggerOption:
        with _engine(probe_db, guard, required=("leader",)) as engine:
            case = engine.open_case("probe", {"extended": True}, actor="clerk:li")
            [check] = engine.available_triggers(case.id, LEADER)
            return check

    waits = option("actor.id == leader and not extended")
    assert (waits.allowed, waits.reason) == (True, "the guard is checked against the input")
    judged = option("not extended")
    assert judged.allowed is False and (judged.reason or "").startswith("[guard]")


# -- what it refuses ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_expression_is_refused(source: str) -> None:
    refused(source, "non-empty")


def test_syntax_error_is_refused() -> None:
    refused("satisfaction ==", "syntax error")


@pytest.mark.parametrize("source", ["approved", "leader == boss", "satisfied"])
def test_unknown_names_are_refused(source: str) -> None:
    refused(source, "unknown name")


@pytest.mark.parametrize(("source", "what"), [
    ("eval('1')", "eval"),
    ("exec('x = 1')", "exec"),
    ("open('x')", "open"),
    ("__import__('os')", "__import__"),
    ("getattr(actor, 'id')", "getattr"),
    ("type(leader)", "type"),
    ("globals()", "globals"),
    ("leader(1)", "leader"),
    ("input.leader(1)", "input.leader"),
])
def test_calls_of_non_whitelisted_names_are_refused(source: str, what: str) -> None:
    refused(source, f"unknown function {what!r}")


@pytest.mark.parametrize("source", ["leader.upper", "note.strip", "attendees.append",
                                    "'x'.join", "now.year", "state.lower"])
def test_attribute_access_outside_actor_input_case_is_refused(source: str) -> None:
    refused(source, "attribute access is only allowed on actor, input and case")


@pytest.mark.parametrize(("source", "fragment"), [
    ("actor.password", "actor has no field 'password'"),
    ("input.colour", "input has no field 'colour'"),
    ("case.colour", "case has no field 'colour'"),
])
def test_unknown_fields_of_the_namespaces_are_refused(source: str, fragment: str) -> None:
    refused(source, fragment)


@pytest.mark.parametrize("source", [
    "__class__",
    "_private",
    "actor.__class__",
    "input.__dict__",
    "case._x",
    "().__class__.__bases__",
    "len.__self__",
    "actor.id.__class__",
])
def test_dunder_and_private_names_are_refused(source: str) -> None:
    assert "not allowed" in refused(source)


@pytest.mark.parametrize("source", [
    "lambda: 1",
    "[x for x in attendees]",
    "{x for x in attendees}",
    "(x for x in attendees)",
    "{'a': 1}",
    "attendees[0]",
    "(y := 1)",
    "f'{leader}'",
    "extension_days ** 99",
    "extension_days << 2",
])
def test_syntax_outside_the_whitelist_is_refused(source: str) -> None:
    refused(source, "is not allowed in a guard")


def test_uncalled_function_is_refused() -> None:
    refused("len", "must be called")
    refused("max(len, 1)", "must be called")


def test_keyword_arguments_are_refused() -> None:
    refused("max(amount, default=1)", "keyword arguments")


def test_non_literal_constants_are_refused() -> None:
    refused("b'bytes' == note", "constant")
    refused("1j == amount", "constant")


def test_a_guard_sees_the_time_of_the_command_and_the_state(holds: Callable[..., bool]) -> None:
    assert holds('now == "2026-02-04T09:00:00+00:00"') is True
    assert holds('state == "open"') is True
