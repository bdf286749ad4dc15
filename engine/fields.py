"""Typed field values: checking and normalising input against declared field types.

Each workflow (and each activity) has one :class:`Validator` over its declared fields.
Input already of the declared types in plain form (the usual case) is taken as it is;
anything else goes through a pydantic model that converts or refuses it, naming the
field. Either way every value then meets the workflow's limits: no NaN or infinity,
integers within the safe range, text without NUL characters or lone surrogates and
within its length, lists within their size and nesting depth. A value that fails is
refused with :class:`InvalidInput` naming the field (never quoting the value), so the
same input is refused identically on SQLite and PostgreSQL, before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .definition import FieldSpec, FieldType, LimitsSpec
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


def _text_problem(v: str, limit: int) -> str | None:
    """Why a text value cannot be stored, or None."""
    if len(v) > limit:
        return f"longer than {limit:,} characters"
    if "\x00" in v:
        return "contains a NUL character"
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text (a lone surrogate)"
    return None


def _number_problem(v: float, lo: float | None, hi: float | None) -> str | None:
    if not math.isfinite(v):
        return "must be a finite number (not NaN or infinity)"
    if lo is not None and v < lo:
        return f"must be at least {lo:g}"
    if hi is not None and v > hi:
        return f"must be at most {hi:g}"
    return None


class _Bounds:
    """The limits that apply to one field."""

    __slots__ = ("depth", "hi", "items", "kind", "length", "limits", "lo")

    def __init__(self, f: FieldSpec, limits: LimitsSpec) -> None:
        self.kind = f.type
        self.limits = limits
        default_length = limits.text_length if f.type is FieldType.TEXT else limits.string_length
        self.length = min(f.max_length, default_length) if f.max_length else default_length
        self.lo: float | None
        self.hi: float | None
        if f.type is FieldType.INT:
            self.lo = max(limits.integer_min, f.minimum) if f.minimum is not None else (
                limits.integer_min)
            self.hi = min(limits.integer_max, f.maximum) if f.maximum is not None else (
                limits.integer_max)
        else:
            self.lo, self.hi = f.minimum, f.maximum
        self.items = min(f.max_items, limits.list_items) if f.max_items is not None else (
            limits.list_items)
        self.depth = limits.depth

    def problem(self, v: Any) -> str | None:
        """Why ``v`` (already of the field's type) exceeds the limits, or None."""
        k = self.kind
        if v is None:
            return None
        if k is FieldType.STRING or k is FieldType.TEXT or k is FieldType.ENUM:
            return _text_problem(v, self.length) if type(v) is str else None
        if k is FieldType.INT:
            return _number_problem(v, self.lo, self.hi) if type(v) is int else None
        if k is FieldType.NUMBER:
            return _number_problem(v, self.lo, self.hi) if isinstance(v, float) else None
        if k is FieldType.LIST:
            return self.value_problem(v)
        return None

    def value_problem(self, value: Any) -> str | None:
        """Why a list value (any JSON-like nesting) exceeds the limits, walked without
        recursion so that no depth can exhaust the stack."""
        lim = self.limits
        if not isinstance(value, (list, tuple)):
            return None  # the model refuses it
        if len(value) > self.items:
            return f"has more than {self.items:,} items"
        size = 0
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            v, depth = stack.pop()
            if isinstance(v, (list, tuple, dict)):
                if depth > self.depth:
                    return f"is nested deeper than {self.depth} levels"
                if len(v) > lim.list_items:
                    return f"holds a list or object of more than {lim.list_items:,} items"
                size += 2 + len(v)
                if isinstance(v, dict):
                    for k, x in v.items():
                        if type(k) is not str:
                            return "holds an object key that is not text"
                        why = _text_problem(k, lim.string_length)
                        if why:
                            return f"holds an object key that {why}"
                        size += len(k) + 3
                        stack.append((x, depth + 1))
                else:
                    stack.extend((x, depth + 1) for x in v)
            elif isinstance(v, str):
                why = _text_problem(v, lim.text_length)
                if why:
                    return f"holds text that {why}"
                size += len(v) + 2
            elif isinstance(v, bool) or v is None:
                size += 5
            elif isinstance(v, int):
                if not lim.integer_min <= v <= lim.integer_max:
                    return "holds an integer outside the safe range"
                size += 20
            elif isinstance(v, float):
                if not math.isfinite(v):
                    return "holds a number that is NaN or infinite"
                size += 24
            else:
                return f"holds a value of type {type(v).__name__}, which is not JSON"
            if size > lim.value_bytes:
                return f"is larger than {lim.value_bytes:,} bytes"
        return None


class Validator:
    """Checks and normalises input values against declared field types and limits."""

    def __init__(self, name: str, fields: Mapping[str, FieldSpec],
                 limits: LimitsSpec | None = None) -> None:
        limits = limits or LimitsSpec()
        defs: dict[str, Any] = {k: (_python_type(v) | None, None) for k, v in fields.items()}
        self._model: type[BaseModel] = create_model(
            name, __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **defs
        )
        self._plain: dict[str, Callable[[Any], Any]] = {}
        self._bounds = {k: _Bounds(f, limits) for k, f in fields.items()}
        for k, f in fields.items():
            if f.type is FieldType.ENUM:
                self._plain[k] = _one_of(frozenset(f.values))
            elif f.type in _PLAIN:
                self._plain[k] = _PLAIN[f.type]

    def __call__(self, values: Mapping[str, Any]) -> dict[str, Any]:
        if not values:
            return {}
        plain = self._plain
        bounds = self._bounds
        out: dict[str, Any] = {}
        for k, v in values.items():
            norm = plain.get(k)
            if norm is None:
                break
            if v is not None:
                v = norm(v)
                if v is _SLOW:
                    break
                why = bounds[k].problem(v)
                if why is not None:
                    raise InvalidInput(f"{k}: {why}")
            out[k] = v
        else:
            return out
        return self._through_model(values)

    def _through_model(self, values: Mapping[str, Any]) -> dict[str, Any]:
        problems = []
        for k, v in values.items():
            b = self._bounds.get(k)
            if b is None:
                continue
            # Before the model: lists walked here cannot exhaust its recursion, and text is
            # checked for what the databases cannot store.
            why = b.value_problem(v) if b.kind is FieldType.LIST else (
                _text_problem(v, b.length) if type(v) is str else None)
            if why is not None:
                problems.append(f"{k}: {why}")
        if problems:
            raise InvalidInput("; ".join(problems))
        try:
            m = self._model.model_validate(values)
        except ValidationError as e:
            raise InvalidInput("; ".join(_describe(err) for err in e.errors())) from None
        except (RecursionError, MemoryError, OverflowError, ValueError, TypeError):
            raise InvalidInput("a value could not be read as its field's type") from None
        out = m.model_dump(mode="json", exclude_unset=True)
        for k, v in out.items():
            why = self._bounds[k].problem(v)
            if why is not None:
                problems.append(f"{k}: {why}")
        if problems:
            raise InvalidInput("; ".join(problems))
        return out


def _describe(err: Any) -> str:
    """One pydantic error as ``field: what is wrong`` (never the value itself)."""
    loc = ".".join(str(x) for x in err["loc"])
    if len(loc) > 80:
        loc = loc[:77] + "..."
    if err["type"] == "extra_forbidden":
        return f"{loc!r}: not a field of this workflow" if not loc.isidentifier() else (
            f"{loc}: not a field of this workflow")
    if err["type"] == "finite_number":
        return f"{loc}: must be a finite number (not NaN or infinity)"
    return f"{loc}: {err['msg']}"
