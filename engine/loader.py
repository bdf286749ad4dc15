"""Reading workflow YAML with line numbers, collecting every error, and versioning.

``load_definition`` parses with ruamel.yaml (which keeps the line of every
key), validates the shape with pydantic and the structure with
:mod:`engine.checks`, and raises one :class:`DefinitionError` that lists
every problem as ``file:line: message``. A YAML syntax error is told in plain
words (a tab, bad indentation, an unclosed quote or bracket, a duplicate key, a
missing colon) with its line and column. The version of a definition is a
hash of its parsed content, so comments and formatting do not change it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .checks import check_workflow
from .definition import WorkflowSpec
from .errors import DefinitionError, Problem


@dataclass(frozen=True)
class LoadedDefinition:
    """A checked definition, its content version and where it came from."""

    spec: WorkflowSpec
    version: str
    source: str


def version_of(spec: WorkflowSpec) -> str:
    """The content version: a hash of the canonical JSON of the parsed definition."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _line_of(doc: Any, loc: Iterable[Any]) -> int | None:
    """The 1-based line of the deepest node of ``loc`` found in the parsed YAML."""
    line: int | None = None
    node = doc
    for key in loc:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, dict) and key in node:
                if lc is not None:
                    line = lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
                if lc is not None:
                    line = lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
    if line is None and getattr(doc, "lc", None) is not None:
        line = doc.lc.line + 1
    return line


# What a definition file may be: a workflow is a few hundred lines, so these bounds refuse
# only what would make reading it a way to exhaust the host (a file of megabytes, a few
# lines of aliases that expand to millions of nodes, an alias that contains itself).
MAX_BYTES = 512_000
MAX_NODES = 20_000   # values once every alias is expanded
MAX_DEPTH = 64


def parse_definition(text: str, source: str, *, functions: Iterable[str] = ()) -> LoadedDefinition:
    """Parse and check one definition; raise :class:`DefinitionError` listing every problem.
    ``functions``: the names of the host functions its expressions may call."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise DefinitionError([Problem(source, None, f"the file is {size:,} bytes; a workflow "
                                       f"definition may be at most {MAX_BYTES:,}")])
    # Each key and item needs a colon, a comma or a dash: a quick upper bound of the values,
    # so that a file of too many of them is refused before the (slow) YAML reader runs.
    rough = text.count(":") + text.count(",") + text.count("- ")
    if rough > 2 * MAX_NODES:
        raise DefinitionError([Problem(source, None, f"the file holds about {rough:,} keys and "
                                       f"items; a workflow definition may hold {MAX_NODES:,}")])
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as e:
        raise DefinitionError([yaml_problem(e, text, source)]) from None
    except (YAMLError, RecursionError, AttributeError, TypeError, ValueError) as e:
        # ruamel fails this way on some self-referencing aliases and merge keys
        raise DefinitionError([Problem(source, None, f"malformed YAML: {_first(e)}")]) from None
    if not isinstance(doc, dict):
        raise DefinitionError([Problem(source, 1, "a workflow file must be a mapping")])
    problem = _too_big(doc)
    if problem is not None:
        raise DefinitionError([Problem(source, problem[0], problem[1])])
    try:
        spec = WorkflowSpec.model_validate(_plain(doc))
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(x) for x in loc)
            problems.append(Problem(source, _line_of(doc, loc), f"{where}: {err['msg']}"))
        raise DefinitionError(problems) from None
    found = check_workflow(spec, functions)
    if found:
        raise DefinitionError([Problem(source, _line_of(doc, loc), msg) for loc, msg in found])
    return LoadedDefinition(spec, version_of(spec), source)


def _at(column: int, sentence: str) -> str:
    return f"malformed YAML at column {column}: {sentence}"


def _previous_line(lines: list[str], index: int) -> tuple[int, str] | None:
    """The last line before ``index`` that holds something other than a comment."""
    for i in range(min(index, len(lines)) - 1, -1, -1):
        body = lines[i].split(" #", 1)[0].strip()
        if body and not body.startswith("#"):
            return i, lines[i]
    return None


def yaml_problem(e: MarkedYAMLError, text: str, source: str) -> Problem:
    """ruamel's syntax error as a plain sentence at the line and column it concerns."""
    lines = text.splitlines()
    problem, context = str(e.problem or ""), str(e.context or "")
    mark, start = e.problem_mark, e.context_mark
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else 1

    if "'\\t'" in problem or "\t" in problem:
        return Problem(source, line, _at(col, "a tab character: YAML indents with spaces only "
                                              "(replace the tab with spaces)"))
    if "quoted scalar" in context and start is not None:
        opening = lines[start.line][start.column:start.column + 1] if start.line < len(lines) else ""
        quote = opening or '"'
        return Problem(source, start.line + 1, _at(
            start.column + 1, f"the quoted value that opens here is never closed "
                              f"(a closing {quote} is missing)"))
    if "flow sequence" in context or "flow mapping" in context:
        opener, closer, what = ("[", "]", "list") if "sequence" in context else ("{", "}", "mapping")
        if start is None:
            start = mark
        found = f" (line {line}, column {col})" if line is not None else ""
        return Problem(source, start.line + 1 if start is not None else line, _at(
            (start.column + 1) if start is not None else col,
            f"the {what} '{opener}' opened here is not closed where it should be{found}: "
            f"a '{closer}' is missing, or a ',' between its items"))
    if problem.startswith("found duplicate key"):
        key = re.match(r'found duplicate key "(.*?)" with value', problem)
        name = key.group(1) if key else "?"
        first = ""
        if mark is not None:
            indent = " " * mark.column
            for i in range(mark.line - 1, (start.line - 1) if start is not None else -1, -1):
                if re.match(rf"{re.escape(indent)}{re.escape(name)}\s*:", lines[i]):
                    first = f" (first at line {i + 1})"
                    break
        return Problem(source, line, _at(col, f"the key {name!r} is given twice in one "
                                              f"mapping{first}; keys must be unique"))
    if "could not find expected ':'" in problem and start is not None:
        bare = lines[start.line].strip() if start.line < len(lines) else ""
        return Problem(source, start.line + 1, _at(
            start.column + 1, f"a key without ':' ({bare!r}); write 'key: value', "
                              f"with a space after the colon"))
    if problem.startswith("mapping values are not allowed"):
        here = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
        before = here[:col - 1]
        if ": " in before.split("#", 1)[0]:
            return Problem(source, line, _at(col, "a value holds ': ' (a colon and a space): "
                                                  "put the value in quotes"))
        prev = _previous_line(lines, mark.line) if mark is not None else None
        if prev is not None and ":" not in prev[1] and not prev[1].strip().startswith("-"):
            return Problem(source, prev[0] + 1, _at(
                len(prev[1]) - len(prev[1].lstrip()) + 1,
                f"a key without ':' ({prev[1].strip()!r}); write 'key: value', "
                f"with a space after the colon"))
        above = f" (line {prev[0] + 1})" if prev is not None else ""
        return Problem(source, line, _at(
            len(here) - len(here.lstrip()) + 1,
            f"bad indentation: this line is indented under the line above{above}, which "
            f"already has a value; give it the same indentation as its sibling keys"))
    if "expected <block end>" in problem:
        block = (f"; the block it belongs to starts at line {start.line + 1}, column "
                 f"{start.column + 1}") if start is not None else ""
        return Problem(source, line, _at(
            col, f"bad indentation: this line does not line up with the lines above it{block}; "
                 f"keys of one mapping, and the '-' items of one list, start in the same column"))
    what = f"{problem} ({context})" if context else problem or str(e)
    return Problem(source, line, _at(col, what))


def load_definition(path: str | Path, *, functions: Iterable[str] = ()) -> LoadedDefinition:
    """Read and check the definition in ``path`` (``functions``: as for
    :func:`parse_definition`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DefinitionError([Problem(str(p), None, f"cannot read: {e.strerror}")]) from None
    return parse_definition(text, str(p), functions=functions)


def load_definitions(paths: Iterable[str | Path], *,
                     functions: Iterable[str] = ()) -> list[LoadedDefinition]:
    """Load several files; every problem of every file is reported together."""
    functions = tuple(functions)
    loaded: list[LoadedDefinition] = []
    problems: list[Problem] = []
    for p in paths:
        try:
            loaded.append(load_definition(p, functions=functions))
        except DefinitionError as e:
            problems.extend(e.problems)
    names: dict[str, str] = {}
    for d in loaded:
        if d.spec.workflow in names:
            problems.append(Problem(d.source, None, f"workflow {d.spec.workflow!r} is also "
                                    f"defined in {names[d.spec.workflow]}"))
        names[d.spec.workflow] = d.source
    if problems:
        raise DefinitionError(problems)
    return loaded


def _first(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _too_big(doc: Any) -> tuple[int | None, str] | None:
    """Whether the document, its aliases expanded, is too large or contains itself: the
    size of each node is counted once (``sizes``), so a bomb is found without expanding it."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(doc, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        children = list(node.values()) if isinstance(node, dict) else list(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes.get(id(c), 1) if isinstance(c, (dict, list)) else 1
                                 for c in children)
            if sizes[key] > MAX_NODES:
                return _line(node), (f"the definition expands to more than {MAX_NODES:,} "
                                     "values (nested aliases?); it is refused")
            if len(sizes) > MAX_NODES:
                return _line(node), f"the definition holds more than {MAX_NODES:,} values"
            continue
        if key in sizes:
            continue
        if key in on_path:
            return _line(node), "an alias (or merge key) refers to the value that contains it"
        if depth > MAX_DEPTH:
            return _line(node), f"the definition is nested deeper than {MAX_DEPTH} levels"
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if isinstance(c, (dict, list)))
    return None


def _line(node: Any) -> int | None:
    lc = getattr(node, "lc", None)
    return lc.line + 1 if lc is not None and lc.line is not None else None


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts and lists."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node
