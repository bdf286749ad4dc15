"""Input validation: a case's fields hold what their declared types make of the input.

Every field type is declared in one small workflow; each value a host may send is
opened on a case, and what the engine stores is compared with what a pydantic model
of the declared types makes of it (the engine takes values already in their stored
form without the model; the result must be the same for every kind of value, valid
or not). A refused value names its field and opens nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any, Literal

import pytest
from casework import Engine, FieldSpec, FieldType, InvalidInput, parse_definition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, FiniteFloat, ValidationError, create_model

PROBE = """\
workflow: probe
title: One field of every type
roles: [clerk]
initial: open
fields:
  s: {type: string}
  t: {type: text}
  i: {type: int}
  n: {type: number}
  b: {type: bool}
  d: {type: date}
  dt: {type: datetime}
  l: {type: list}
  e: {type: enum, values: ["yes", "no"]}
open:
  optional: [s, t, i, n, b, d, dt, l, e]
states:
  open: {description: open}
  closed: {final: true, description: closed}
transitions:
  - trigger: close
    source: open
    dest: closed
"""
DEFINITION = parse_definition(PROBE, "probe.yaml")
FIELDS: dict[str, FieldSpec] = dict(DEFINITION.spec.fields)


def _python_type(spec: FieldSpec) -> Any:
    """The Python type a field of ``spec``'s type holds (numbers are finite: JSON has no
    infinity)."""
    if spec.type is FieldType.ENUM:
        return Literal[spec.values]
    return {
        FieldType.STRING: str, FieldType.TEXT: str, FieldType.INT: int,
        FieldType.NUMBER: FiniteFloat, FieldType.BOOL: bool, FieldType.DATE: date,
        FieldType.DATETIME: datetime, FieldType.LIST: list[Any],
    }[spec.type]


MODEL: type[BaseModel] = create_model(
    "probe_fields", __config__=ConfigDict(extra="forbid"),
    **{k: (_python_type(v) | None, None) for k, v in FIELDS.items()})

# Values within the workflow's limits (the limits have their own tests): text without NUL,
# integers in lists within the safe range.
ANY_VALUE = st.one_of(
    st.none(), st.text(st.characters(blacklist_characters="\x00"), max_size=12),
    st.integers(-5, 5), st.floats(allow_nan=False),
    st.booleans(), st.dates().map(date.isoformat), st.dates(), st.datetimes(),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.sampled_from(["yes", "no", "maybe", "2026-02-30", "2026-2-3", "1", "true"]),
    st.lists(st.integers(-(2**53) + 1, 2**53 - 1), max_size=2),
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    db = tmp_path_factory.mktemp("probe") / "cases.db"
    with Engine(f"sqlite:///{db}", [DEFINITION], sqlite_synchronous="OFF") as engine:
        yield engine


def _through_model(values: dict[str, Any]) -> dict[str, Any] | str:
    try:
        m = MODEL.model_validate(values)
    except ValidationError:
        return "ValidationError"
    return m.model_dump(mode="json", exclude_unset=True)


def _stored(engine: Engine, values: dict[str, Any]) -> dict[str, Any] | str:
    """What a case opened with ``values`` holds, as stored (or that it was refused)."""
    before = engine.stored_counts()
    try:
        case = engine.open_case("probe", values, actor="clerk:li")
    except InvalidInput:
        assert engine.stored_counts() == before
        return "ValidationError"
    stored = dict(engine.get_case(case.id).data)
    assert dict(case.data) == stored  # the case the command returns is the one stored
    return stored


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from([*FIELDS, "unknown"]), ANY_VALUE, max_size=4))
def test_a_case_holds_what_the_model_gives_for_any_input(probe: Engine,
                                                         values: dict[str, Any]) -> None:
    assert _stored(probe, values) == _through_model(values)


def test_values_in_stored_form_are_taken_as_they_are(probe: Engine) -> None:
    values = {"s": "x", "i": 3, "n": 2.5, "b": False, "d": "2026-03-01", "e": "no", "t": None,
              "dt": "2026-03-01T08:30:00Z"}
    assert _stored(probe, values) == values


@pytest.mark.parametrize(("values", "stored"), [
    ({"n": 3}, {"n": 3.0}),
    ({"i": "7"}, {"i": 7}),
    ({"d": date(2026, 3, 1)}, {"d": "2026-03-01"}),
    ({"dt": datetime(2026, 3, 1, 8, 30)}, {"dt": "2026-03-01T08:30:00"}),
    ({"dt": "2026-03-01T08:30:00.250000+00:00"}, {"dt": "2026-03-01T08:30:00.250000Z"}),
    ({"dt": "2026-03-01T08:30:00+08:00"}, {"dt": "2026-03-01T08:30:00+08:00"}),
])
def test_other_values_are_converted_by_the_model(probe: Engine, values: dict[str, Any],
                                                 stored: dict[str, Any]) -> None:
    assert _stored(probe, values) == stored


@pytest.mark.parametrize(("values", "where"), [
    ({"e": "maybe"}, "e:"), ({"d": "2026-02-30"}, "d:"), ({"i": "seven"}, "i:"),
    ({"e": ["yes"]}, "e:"), ({"unknown": 1}, "unknown: not a field"),
    ({"n": float("inf")}, "n:"), ({"n": float("-inf")}, "n:"),
])
def test_bad_values_are_refused_naming_the_field(probe: Engine, values: dict[str, Any],
                                                 where: str) -> None:
    before = probe.stored_counts()
    with pytest.raises(InvalidInput, match=where):
        probe.open_case("probe", values, actor="clerk:li")
    assert probe.stored_counts() == before


def test_the_probe_declares_every_field_type() -> None:
    assert {f.type for f in FIELDS.values()} == set(FieldType)
