"""The guard language under generated expressions and generated data: whatever is written
in a definition and whatever a case holds, compiling and evaluating either succeed or raise
the language's own error, and no value it computes grows past the bound.

This tests the expression module itself (the unit that reads guards), below the public API.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
from casework.expressions import MAX_RESULT, ExpressionError, compile_expression
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIELDS = ["a", "b", "c", "s", "items", "when"]
FUNCTIONS = ["len", "abs", "min", "max", "lower", "upper", "days_between", "present", "date"]

ATOMS = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(["actor.id", "actor.roles", "actor.unit", "input.a", "case.s", "now",
                     "state"]),
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(string.printable, max_size=12).map(repr),
    st.sampled_from(["None", "True", "False", "1e999", "-1e999", "'%999999999d'", "'%c'",
                     "'x' * 100000", "[1] * 100000"]),
)
BINARY = ["+", "-", "*", "/", "//", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or",
          "in", "not in", "is", "is not"]


def _expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.sampled_from(["not ", "-", "+"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(FUNCTIONS), st.lists(inner, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"),
            st.lists(inner, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        )
    return st.recursive(ATOMS, extend, max_leaves=30)


# Junk too: random text is mostly syntax errors and forbidden constructs.
SOURCES = st.one_of(_expressions(), st.text(max_size=80))

VALUES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
              st.sampled_from(["2026-03-01", "2026-03-01T10:00:00+08:00", "not a date"])),
    lambda inner: st.lists(inner, max_size=4), max_leaves=10)
DATA = st.fixed_dictionaries({f: VALUES for f in FIELDS})


def _small(value: Any) -> bool:
    return not isinstance(value, (str, list, tuple)) or len(value) <= MAX_RESULT


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=SOURCES, data=DATA)
def test_any_expression_over_any_data_compiles_and_evaluates_or_refuses_cleanly(
        source: str, data: dict[str, Any]) -> None:
    try:
        expr = compile_expression(source, fields=FIELDS)
    except ExpressionError:
        return
    names = {**data, "actor": {"id": "li", "roles": ["clerk"], "unit": "court"},
             "input": {"a": data["a"]}, "case": {"s": data["s"]},
             "now": "2026-03-01T10:00:00+00:00", "state": "registered"}
    try:
        value = expr.evaluate(names)
    except ExpressionError:
        return
    assert _small(value)


@pytest.mark.parametrize("source", [
    '"%999999999d" % 1', '"%d" % 1e999', "'%c' % 99999999", "s % 3",
    "'x' * 100000 * 10", "[1] * 99999999", "s * 100000 * 100000",
    " + ".join(["a"] * 400), "not " * 400 + "a", "-" * 600 + "a",
    "(" * 300 + "a" + ")" * 300,
])
def test_expressions_that_would_exhaust_the_host_are_refused_at_load_or_evaluation(
        source: str) -> None:
    try:
        expr = compile_expression(source, fields=FIELDS)
    except ExpressionError:
        return
    with pytest.raises(ExpressionError):
        expr.evaluate({"a": 1, "s": "x" * 10})


def test_an_evaluation_error_does_not_quote_the_value_it_failed_on() -> None:
    expr = compile_expression("days_between(s, now)", fields=FIELDS)
    with pytest.raises(ExpressionError) as err:
        expr.evaluate({"s": "Wang Xiaoming", "now": "2026-03-01T10:00:00+00:00"})
    assert "Wang" not in str(err.value)
