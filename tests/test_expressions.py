"""The guard language (engine.expressions): what it computes and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from casework.expressions import ExpressionError, compile_expression, days_between

FIELDS = {"satisfaction", "leader", "extended", "extension_days", "channel", "replied_at",
          "amount", "attendees", "note", "items"}
NOW = "2026-02-04T09:00:00+00:00"


def names(**values: Any) -> dict[str, Any]:
    """What a guard sees: every field (None unless given), input, case, actor, now, state."""
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out.update(values)
    out.setdefault("input", {})
    out.setdefault("case", {})
    out.setdefault("actor", {"id": "chen", "roles": ["leader"], "unit": "court"})
    out.setdefault("now", NOW)
    out.setdefault("state", "replied")
    return out


def ev(source: str, **values: Any) -> Any:
    return compile_expression(source, fields=FIELDS).evaluate(names(**values))


def refused(source: str, fragment: str = "") -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source, fields=FIELDS)
    assert fragment in str(info.value)
    return info.value


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
def test_comparisons_and_arithmetic(source: str, expected: bool) -> None:
    assert ev(source, extension_days=20) is expected


def test_string_equality() -> None:
    assert ev('satisfaction == "satisfied"', satisfaction="satisfied") is True
    assert ev('satisfaction == "satisfied"', satisfaction="unsatisfied") is False
    assert ev('satisfaction == "satisfied"') is False  # unset field is None
    assert ev('satisfaction != "satisfied"') is True


@pytest.mark.parametrize(("a", "b", "expected"), [
    (True, True, (True, True)), (True, False, (False, True)),
    (False, True, (False, True)), (False, False, (False, False)),
])
def test_and_or(a: bool, b: bool, expected: tuple[bool, bool]) -> None:
    assert (bool(ev("extended and note", extended=a, note=b)),
            bool(ev("extended or note", extended=a, note=b))) == expected


def test_not_and_none_fields() -> None:
    assert ev("not extended") is True
    assert ev("not extended", extended=True) is False
    assert ev("extended is None") is True
    assert ev("extended is not None", extended=False) is True


def test_and_short_circuits_like_a_guard_should() -> None:
    # replied_at is None: days_between would fail, but `and` never gets there.
    assert not ev("replied_at and days_between(replied_at, now) <= 30")


def test_in_and_not_in_lists() -> None:
    assert ev('channel in ["visit", "letter"]', channel="visit") is True
    assert ev('channel in ["visit", "letter"]', channel="online") is False
    assert ev('channel not in ("phone", "online")', channel="letter") is True
    assert ev('"court" in attendees', attendees=["court", "police"]) is True


def test_conditional_expression() -> None:
    assert ev('"many" if amount > 10 else "few"', amount=11) == "many"


def test_days_between_whole_and_fractional_days() -> None:
    assert ev("days_between(replied_at, now)", replied_at="2026-01-05T09:00:00Z") == 30
    assert ev("days_between(replied_at, now) <= 30", replied_at="2026-01-05T09:00:00Z") is True
    assert ev("days_between(replied_at, now) <= 30", replied_at="2026-01-05T08:59:00Z") is False
    assert days_between("2026-01-01", "2026-01-02T12:00:00") == 1.5
    assert days_between("2026-01-10", "2026-01-01") == -9


def test_days_between_mixes_aware_and_naive_times() -> None:
    assert days_between("2026-01-01T00:00:00+00:00", "2026-01-03T00:00:00") == 2


def test_days_between_a_non_date_fails_at_evaluation() -> None:
    expr = compile_expression("days_between(note, now) > 1", fields=FIELDS)
    with pytest.raises(ExpressionError):
        expr.evaluate(names(note="not a date"))
    with pytest.raises(ExpressionError):
        expr.evaluate(names(note=42))


def test_whitelisted_functions() -> None:
    assert ev("len(attendees) >= 2", attendees=["a", "b"]) is True
    assert ev("max(amount, 10)", amount=3) == 10
    assert ev("min(amount, 10)", amount=3) == 3
    assert ev("abs(amount)", amount=-3) == 3
    assert ev('lower(channel) == "visit"', channel="VISIT") is True
    assert ev('upper(channel)', channel="visit") == "VISIT"
    assert ev("present(note)", note="x") is True
    assert ev("present(note)", note="") is False
    assert ev("present(attendees)", attendees=[]) is False
    assert ev('date(replied_at) == "2026-01-05"', replied_at="2026-01-05T09:00:00Z") is True


def test_actor_id_and_roles() -> None:
    assert ev("actor.id == leader", leader="chen") is True
    assert ev("actor.id == leader", leader="ma") is False
    assert ev('"leader" in actor.roles') is True
    assert ev('"clerk" in actor.roles') is False
    assert ev('actor.unit == "court"') is True


def test_input_and_case_namespaces() -> None:
    values = {"input": {"extension_days": 5}, "case": {"leader": "chen"}}
    assert ev("input.extension_days == 5", **values) is True
    assert ev('case.leader == "chen"', **values) is True


def test_input_field_named_like_a_dict_method_reads_the_field() -> None:
    """``input.items`` is the field ``items``, not the mapping's ``items`` method."""
    assert ev("input.items", input={"items": [1, 2]}) == [1, 2]
    assert ev("len(case.items) == 2", case={"items": ["a", "b"]}) is True


def test_division_by_zero_is_an_expression_error() -> None:
    expr = compile_expression("amount / extension_days > 1", fields=FIELDS)
    with pytest.raises(ExpressionError):
        expr.evaluate(names(amount=1, extension_days=0))


def test_host_function_can_be_registered() -> None:
    expr = compile_expression("is_holiday(now)", fields=FIELDS,
                              functions={"is_holiday": lambda s: s.startswith("2026-02")})
    assert expr.evaluate(names()) is True
    assert expr.names == frozenset({"now"})


def test_names_lists_the_fields_an_expression_reads() -> None:
    expr = compile_expression("actor.id == leader and not extended", fields=FIELDS)
    assert expr.names == frozenset({"actor", "leader", "extended"})


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
    err = refused(source)
    assert "not allowed" in str(err)


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
