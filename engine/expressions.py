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
import operator
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from simpleeval import DEFAULT_OPERATORS, MAX_STRING_LENGTH, EvalWithCompoundTypes

# What an expression may be at load time; past these it is refused with file:line.
MAX_SOURCE = 2_000   # characters
MAX_DEPTH = 64       # nesting of the syntax tree
MAX_NODES = 500      # nodes of the syntax tree
# What a value computed on the way may be: text and lists up to this many items.
MAX_RESULT = MAX_STRING_LENGTH


class ExpressionError(ValueError):
    """An expression does not parse, uses something the language forbids, or failed."""


def _mod(a: Any, b: Any) -> Any:
    """``%`` on numbers only: string formatting could build unbounded text."""
    if isinstance(a, (str, bytes)):
        raise ExpressionError("string formatting with % is not allowed")
    return operator.mod(a, b)


_OPERATORS = {**DEFAULT_OPERATORS, ast.Mod: _mod}


def _to_datetime(v: Any) -> datetime:
    """An instant in UTC: aware values are converted, naive ones taken as UTC (the engine
    stores UTC); a date is its midnight in UTC."""
    if isinstance(v, datetime):
        d = v
    elif isinstance(v, date):
        d = datetime(v.year, v.month, v.day)
    elif isinstance(v, str):
        d = datetime.fromisoformat(v)
    else:
        raise TypeError("not a date")
    return d.astimezone(UTC).replace(tzinfo=None) if d.tzinfo is not None else d


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
            ev = self._local.ev = EvalWithCompoundTypes(operators=_OPERATORS,
                                                        functions=dict(self._functions))
        for ns in _VIEWS:
            if isinstance(names.get(ns), dict):
                names = {**names, ns: FieldView(names[ns])}
        ev.names = names
        try:
            value = ev.eval(self.source, previously_parsed=self._tree.body)
        except ExpressionError as e:
            raise ExpressionError(f"{self.source!r}: {e}") from None
        except Exception as e:  # any failure of the language or of a host's function
            raise ExpressionError(f"{self.source!r}: {_reason(e)}") from None
        if isinstance(value, (str, list, tuple)) and len(value) > MAX_RESULT:
            raise ExpressionError(f"{self.source!r}: the value is longer than {MAX_RESULT:,}")
        return value

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


def _reason(e: BaseException) -> str:
    """What went wrong, in words that never quote the values involved (they may be
    personal data): the kind of failure, not the message."""
    kinds = {
        ZeroDivisionError: "division by zero", OverflowError: "a number grew too large",
        RecursionError: "the expression is nested too deeply", MemoryError: "out of memory",
        TypeError: "a value of the wrong type for this operation",
        KeyError: "an unknown name", AttributeError: "an unknown attribute",
        IndexError: "an index out of range",
    }
    for kind, text in kinds.items():
        if isinstance(e, kind):
            return text
    name = type(e).__name__
    if name == "IterableTooLong":
        return f"a value would be longer than {MAX_RESULT:,}"
    if isinstance(e, ValueError):
        return "a value that cannot be read (e.g. not a date)"
    return f"the evaluation failed ({name})"


def _depth(tree: ast.AST) -> int:
    """The depth of ``tree``, walked without recursion."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def compile_expression(source: str, *, fields: Iterable[str],
                       functions: Mapping[str, Callable[..., Any]] | None = None) -> Expression:
    """Parse ``source`` and check every node, name and call against the whitelist, and
    its size against :data:`MAX_SOURCE`, :data:`MAX_DEPTH` and :data:`MAX_NODES`."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression must be a non-empty string")
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"an expression may be at most {MAX_SOURCE:,} characters "
                              f"(this one has {len(source):,})")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"syntax error in {_short(source)}: {e.msg} (column {e.offset})") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"{_short(source)}: nested too deeply to read") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise ExpressionError(f"{_short(source)}: too large ({nodes} parts; at most {MAX_NODES})")
    if _depth(tree) > MAX_DEPTH:
        raise ExpressionError(f"{_short(source)}: nested deeper than {MAX_DEPTH} levels")
    known = frozenset(fields)
    funcs = dict(FUNCTIONS)
    if functions:
        funcs.update(functions)
    used: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ExpressionError(f"{source!r}: {type(node).__name__} is not allowed in a guard")
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod)
                and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)):
            raise ExpressionError(f"{_short(source)}: string formatting with % is not allowed")
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


def _short(source: str) -> str:
    return repr(source if len(source) <= 80 else source[:77] + "...")


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
