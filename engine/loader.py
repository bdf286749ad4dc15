"""Reading workflow YAML with line numbers, collecting every error, and versioning.

``load_definition`` parses with ruamel.yaml (which keeps the line of every
key), validates the shape with pydantic and the structure with
:mod:`engine.checks`, and raises one :class:`DefinitionError` that lists
every problem as ``file:line: message``. The version of a definition is a
hash of its parsed content, so comments and formatting do not change it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

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


def parse_definition(text: str, source: str) -> LoadedDefinition:
    """Parse and check one definition; raise :class:`DefinitionError` listing every problem."""
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        raise DefinitionError([Problem(source, line, f"malformed YAML: {e.problem or e}")]) from None
    if not isinstance(doc, dict):
        raise DefinitionError([Problem(source, 1, "a workflow file must be a mapping")])
    try:
        spec = WorkflowSpec.model_validate(_plain(doc))
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(x) for x in loc)
            problems.append(Problem(source, _line_of(doc, loc), f"{where}: {err['msg']}"))
        raise DefinitionError(problems) from None
    found = check_workflow(spec)
    if found:
        raise DefinitionError([Problem(source, _line_of(doc, loc), msg) for loc, msg in found])
    return LoadedDefinition(spec, version_of(spec), source)


def load_definition(path: str | Path) -> LoadedDefinition:
    """Read and check the definition in ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DefinitionError([Problem(str(p), None, f"cannot read: {e.strerror}")]) from None
    return parse_definition(text, str(p))


def load_definitions(paths: Iterable[str | Path]) -> list[LoadedDefinition]:
    """Load several files; every problem of every file is reported together."""
    loaded: list[LoadedDefinition] = []
    problems: list[Problem] = []
    for p in paths:
        try:
            loaded.append(load_definition(p))
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


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts and lists."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node
