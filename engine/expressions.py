"""The guard language: a small, safe expression language over case data.

Guards are written in YAML, e.g. ``satisfaction == "satisfied"`` or
``leader and unit and due_date and target``. They are parsed once, checked
against a whitelist of syntax and names, and evaluated by ``simpleeval``:
there is no ``eval``/``exec``, no imports, no attribute access outside the
case's data (``actor.id``, ``input.x``, ``case.x``), and no calls but the
functions listed in :data:`FUNCTIONS` and those a host registers.

Names an expression sees:
  * every declared field, with the command's input laid over the case data;
  * ``input`` (the command's input only), ``case`` (the data before it);
  * ``actor`` (``actor.id``, ``actor.roles``, ``actor.unit``);
  * ``now`` (ISO datetime of the command), ``state`` (the current state).
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression


class ExpressionError(ValueError):
    """An expression does not parse or uses something the language forbids."""


def _to_datetime(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day)
    if isinstance(v, str):
        d = datetime.fromisoformat(v)
        return d.replace(tzinfo=None) if d.tzinfo is not None else d
    raise TypeError(f"not a date: {v!r}")


def days_between(a: Any, b: Any) -> float:
    """Days from ``a`` to ``b`` (fractional), both dates or ISO strings."""
    return (_to_datetime(b) - _to_datetime(a)).total_seconds() / 86400.0


def _present(v: Any) -> bool:
    return v is not None and v != "" and v != [] and v != {}


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "days_between": days_between,
    "present": _present,
    "date": lambda v: _to_datetime(v).date().isoformat(),
}

_NAMESPACES = {"actor": frozenset({"id", "roles", "unit"}), "input": None, "case": None}
_SPECIAL_NAMES = frozenset({"now", "state", "actor", "input", "case"})

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.FloorDiv,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
    ast.Is, ast.IsNot, ast.IfExp, ast.Name, ast.Load, ast.Constant, ast.List, ast.Tuple,
    ast.Attribute, ast.Call,
)


class FieldView:
    """``input.x`` / ``case.x`` in a guard: a field's value (None when unset), nothing else."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values.get(name)


_VIEWS = ("input", "case")


class Expression:
    """A parsed and checked expression, ready to evaluate many times."""

    __slots__ = ("_functions", "_local", "_tree", "names", "source")

    def __init__(self, source: str, tree: ast.Expression, names: frozenset[str],
                 functions: Mapping[str, Callable[..., Any]]) -> None:
        self.source = source
        self.names = names
        self._tree = tree
        self._functions = functions
        self._local = threading.local()

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        """Evaluate against ``names``; a runtime failure raises :class:`ExpressionError`."""
        # One evaluator per thread and expression: building one costs more than evaluating.
        ev = getattr(self._local, "ev", None)
        if ev is None:
            ev = self._local.ev = EvalWithCompoundTypes(functions=dict(self._functions))
        for ns in _VIEWS:
            if isinstance(names.get(ns), dict):
                names = {**names, ns: FieldView(names[ns])}
        ev.names = names
        try:
            return ev.eval(self.source, previously_parsed=self._tree.body)
        except (InvalidExpression, TypeError, ValueError, ZeroDivisionError) as e:
            raise ExpressionError(f"{self.source!r}: {e}") from None

    def failing_part(self, names: Mapping[str, Any]) -> str | None:
        """For ``a and b and c`` that is false, the source of the first part that is false."""
        body = self._tree.body
        if not (isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And)):
            return None
        for part in body.values:
            sub = Expression(ast.unparse(part), ast.Expression(body=part), self.names,
                             self._functions)
            try:
                if not sub.evaluate(names):
                    return sub.source
            except ExpressionError:
                return sub.source
        return None

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile_expression(source: str, *, fields: Iterable[str],
                       functions: Mapping[str, Callable[..., Any]] | None = None) -> Expression:
    """Parse ``source`` and check every node, name and call against the whitelist."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression must be a non-empty string")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"syntax error in {source!r}: {e.msg} (column {e.offset})") from None
    known = frozenset(fields)
    funcs = dict(FUNCTIONS)
    if functions:
        funcs.update(functions)
    used: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ExpressionError(f"{source!r}: {type(node).__name__} is not allowed in a guard")
        if isinstance(node, ast.Constant) and not isinstance(
            node.value, (str, int, float, bool, type(None))
        ):
            raise ExpressionError(f"{source!r}: constant {node.value!r} is not allowed")
        if isinstance(node, ast.Attribute):
            _check_attribute(source, node, known)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in funcs:
                what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ExpressionError(f"{source!r}: unknown function {what!r}")
            if node.keywords:
                raise ExpressionError(f"{source!r}: keyword arguments are not allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise ExpressionError(f"{source!r}: name {node.id!r} is not allowed")
            if node.id in funcs:
                continue
            if node.id not in known and node.id not in _SPECIAL_NAMES:
                raise ExpressionError(f"{source!r}: unknown name {node.id!r}")
            used.add(node.id)
    # A bare function name that is not called would hand out a Python object.
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in funcs and node.id not in known:
            parent_calls = any(
                isinstance(p, ast.Call) and p.func is node for p in ast.walk(tree)
            )
            if not parent_calls:
                raise ExpressionError(f"{source!r}: function {node.id!r} must be called")
    return Expression(source.strip(), tree, frozenset(used), funcs)


def _check_attribute(source: str, node: ast.Attribute, fields: frozenset[str]) -> None:
    if node.attr.startswith("_"):
        raise ExpressionError(f"{source!r}: attribute {node.attr!r} is not allowed")
    if not isinstance(node.value, ast.Name) or node.value.id not in _NAMESPACES:
        raise ExpressionError(
            f"{source!r}: attribute access is only allowed on actor, input and case "
            f"(found .{node.attr})"
        )
    allowed = _NAMESPACES[node.value.id]
    allowed = fields if allowed is None else allowed
    if node.attr not in allowed:
        raise ExpressionError(f"{source!r}: {node.value.id} has no field {node.attr!r}")
