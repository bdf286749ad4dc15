"""Typed field values: checking and normalising input against declared field types.

Each workflow (and each activity) has one :class:`Validator` over its declared fields.
Input already of the declared types in plain form (the usual case) is taken as it is;
anything else goes through a pydantic model that converts or refuses it, naming the
field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .definition import FieldSpec, FieldType
from .errors import InvalidInput


def _python_type(spec: FieldSpec) -> Any:
    t = spec.type
    if t is FieldType.ENUM:
        return Literal[spec.values]
    return {
        FieldType.STRING: str, FieldType.TEXT: str, FieldType.INT: int,
        FieldType.NUMBER: float, FieldType.BOOL: bool, FieldType.DATE: date,
        FieldType.DATETIME: datetime, FieldType.LIST: list[Any],
    }[t]


_SLOW: Any = object()  # "let the model decide"


def _iso_date(v: Any) -> Any:
    try:
        return v if type(v) is str and date.fromisoformat(v).isoformat() == v else _SLOW
    except ValueError:
        return _SLOW


def _iso_datetime(v: Any) -> Any:
    """A datetime string in Python's ISO form, as the model stores it (UTC written ``Z``)."""
    if type(v) is not str:
        return _SLOW
    try:
        d = datetime.fromisoformat(v)
    except ValueError:
        return _SLOW
    out = d.isoformat()
    written = v[:-1] + "+00:00" if v.endswith("Z") else v
    if out != written:
        return _SLOW
    off = d.utcoffset()
    if off is None:
        return out
    if off.seconds % 60 or off.microseconds:
        return _SLOW  # the model refuses offsets in seconds
    return out[:-6] + "Z" if out.endswith("+00:00") else out


def _typed(t: type) -> Callable[[Any], Any]:
    return lambda v: v if type(v) is t else _SLOW


def _one_of(allowed: frozenset[str]) -> Callable[[Any], Any]:
    return lambda v: v if type(v) is str and v in allowed else _SLOW


# What pydantic (lax mode, then a JSON dump) makes of values that are already of the
# declared type and in plain form, by field type, without building the model. Anything
# else (_SLOW) goes through the model, which converts or refuses it.
_PLAIN: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.STRING: _typed(str), FieldType.TEXT: _typed(str), FieldType.INT: _typed(int),
    FieldType.NUMBER: _typed(float), FieldType.BOOL: _typed(bool),
    FieldType.DATE: _iso_date, FieldType.DATETIME: _iso_datetime,
}


class Validator:
    """Checks and normalises input values against declared field types (pydantic).

    Input that is already of the declared types in plain form (the usual case) is taken
    without the model; the pydantic model checks and converts everything else.
    """

    def __init__(self, name: str, fields: Mapping[str, FieldSpec]) -> None:
        defs: dict[str, Any] = {k: (_python_type(v) | None, None) for k, v in fields.items()}
        self._model: type[BaseModel] = create_model(
            name, __config__=ConfigDict(extra="forbid"), **defs
        )
        self._plain: dict[str, Callable[[Any], Any]] = {}
        for k, f in fields.items():
            if f.type is FieldType.ENUM:
                self._plain[k] = _one_of(frozenset(f.values))
            elif f.type in _PLAIN:
                self._plain[k] = _PLAIN[f.type]

    def __call__(self, values: Mapping[str, Any]) -> dict[str, Any]:
        if not values:
            return {}
        plain = self._plain
        out: dict[str, Any] = {}
        for k, v in values.items():
            norm = plain.get(k)
            if norm is None:
                break
            if v is not None:
                v = norm(v)
                if v is _SLOW:
                    break
            out[k] = v
        else:
            return out
        try:
            m = self._model.model_validate(values)
        except ValidationError as e:
            parts = []
            for err in e.errors():
                loc = ".".join(str(x) for x in err["loc"])
                msg = "not a field of this workflow" if err["type"] == "extra_forbidden" else err["msg"]
                parts.append(f"{loc}: {msg}")
            raise InvalidInput("; ".join(parts)) from None
        return m.model_dump(mode="json", exclude_unset=True)


