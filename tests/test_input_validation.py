"""Input validation: values already in their stored form skip the pydantic model, and
the result is the same as the model's for every kind of value, valid or not."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from casework.definition import FieldSpec, FieldType
from casework.errors import InvalidInput
from casework.machine import _Validator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

FIELDS = {
    "s": FieldSpec(type=FieldType.STRING), "t": FieldSpec(type=FieldType.TEXT),
    "i": FieldSpec(type=FieldType.INT), "n": FieldSpec(type=FieldType.NUMBER),
    "b": FieldSpec(type=FieldType.BOOL), "d": FieldSpec(type=FieldType.DATE),
    "dt": FieldSpec(type=FieldType.DATETIME), "l": FieldSpec(type=FieldType.LIST),
    "e": FieldSpec(type=FieldType.ENUM, values=("yes", "no")),
}
VALIDATOR = _Validator("probe", FIELDS)

ANY_VALUE = st.one_of(
    st.none(), st.text(max_size=12), st.integers(-5, 5), st.floats(allow_nan=False),
    st.booleans(), st.dates().map(date.isoformat), st.dates(), st.datetimes(),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.sampled_from(["yes", "no", "maybe", "2026-02-30", "2026-2-3", "1", "true"]),
    st.lists(st.integers(), max_size=2),
)


def _through_model(values: dict[str, Any]) -> dict[str, Any] | str:
    try:
        m = VALIDATOR._model.model_validate(values)
    except ValidationError:
        return "ValidationError"
    return m.model_dump(mode="json", exclude_unset=True)


def _through_validator(values: dict[str, Any]) -> dict[str, Any] | str:
    try:
        return VALIDATOR(values)
    except InvalidInput:
        return "ValidationError"


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*FIELDS, "unknown"]), ANY_VALUE, max_size=4))
def test_validator_gives_what_the_model_gives_for_any_input(values: dict[str, Any]) -> None:
    assert _through_validator(values) == _through_model(values)


def test_values_in_stored_form_are_taken_as_they_are() -> None:
    values = {"s": "x", "i": 3, "n": 2.5, "b": False, "d": "2026-03-01", "e": "no", "t": None,
              "dt": "2026-03-01T08:30:00Z"}
    assert VALIDATOR(values) == values


@pytest.mark.parametrize(("values", "stored"), [
    ({"n": 3}, {"n": 3.0}),
    ({"i": "7"}, {"i": 7}),
    ({"d": date(2026, 3, 1)}, {"d": "2026-03-01"}),
    ({"dt": datetime(2026, 3, 1, 8, 30)}, {"dt": "2026-03-01T08:30:00"}),
    ({"dt": "2026-03-01T08:30:00.250000+00:00"}, {"dt": "2026-03-01T08:30:00.250000Z"}),
    ({"dt": "2026-03-01T08:30:00+08:00"}, {"dt": "2026-03-01T08:30:00+08:00"}),
])
def test_other_values_are_converted_by_the_model(values: dict[str, Any],
                                                 stored: dict[str, Any]) -> None:
    assert VALIDATOR(values) == stored


@pytest.mark.parametrize(("values", "where"), [
    ({"e": "maybe"}, "e:"), ({"d": "2026-02-30"}, "d:"), ({"i": "seven"}, "i:"),
    ({"e": ["yes"]}, "e:"), ({"unknown": 1}, "unknown: not a field"),
])
def test_bad_values_are_refused_naming_the_field(values: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput, match=where):
        VALIDATOR(values)
