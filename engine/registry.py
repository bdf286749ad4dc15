"""The workflow registry: every compiled version the engine knows, newest per name.

Definitions handed to the engine are compiled once and their versions stored in the
database (so a case opened under a version can always be run on it again); a stored
version that is not loaded is compiled from the database on first use. A name without
a path (``"petition"``) is one of the workflows shipped in the package.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from .clock import Clock, to_db
from .errors import DefinitionError, Problem, UnknownWorkflow
from .loader import LoadedDefinition, load_definitions, parse_definition
from .machine import CompiledWorkflow, NamedAction, NamedGuard, TimingOptions
from .storage import Storage

WorkflowSource = str | Path | LoadedDefinition


def shipped_workflows() -> dict[str, Path]:
    """The workflow files shipped inside the package, by name (``petition``, ...)."""
    root = files("casework.workflows")
    return {p.name.removesuffix(".yaml"): Path(str(p)) for p in root.iterdir()
            if p.name.endswith(".yaml")}


def _resolve(source: str | Path) -> Path:
    """A path as given, or the shipped workflow of that name."""
    text = str(source)
    if isinstance(source, str) and "/" not in text and "\\" not in text and not text.endswith(
            (".yaml", ".yml", ".json")):
        shipped = shipped_workflows()
        if text not in shipped:
            raise DefinitionError([Problem(text, None, f"no shipped workflow named {text!r} "
                                           f"(shipped: {sorted(shipped)}); give a file path")])
        return shipped[text]
    return Path(source)


@dataclass(frozen=True)
class CompileOptions:
    """What a host registers for its workflows: named guards, actions, functions; and the
    settings that shape clocks."""

    guards: Mapping[str, NamedGuard] = field(default_factory=dict)
    actions: Mapping[str, NamedAction] = field(default_factory=dict)
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    timing: TimingOptions = field(default_factory=TimingOptions)


class Registry:
    """Compiled workflow versions; safe to share between threads."""

    def __init__(self, storage: Storage, clock: Clock, options: CompileOptions) -> None:
        self._storage = storage
        self._clock = clock
        self._options = options
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], CompiledWorkflow] = {}
        self._latest: dict[str, CompiledWorkflow] = {}
        self._loaded: dict[str, LoadedDefinition] = {}

    def load(self, sources: Iterable[WorkflowSource]) -> None:
        """Compile and register definitions (files, shipped names or loaded definitions);
        every problem of every file is reported together."""
        sources = list(sources)
        loaded = [s for s in sources if isinstance(s, LoadedDefinition)]
        loaded += load_definitions([_resolve(s) for s in sources
                                    if not isinstance(s, LoadedDefinition)],
                                   functions=self._options.functions)
        for d in loaded:
            self.register(d)

    def compile(self, d: LoadedDefinition) -> CompiledWorkflow:
        """``d`` compiled with this registry's options, not registered."""
        return self._compile(d)

    def parse(self, text: str, source: str) -> LoadedDefinition:
        """A definition's text (a stored copy) parsed and checked, its expressions allowed
        the host functions this registry compiles with."""
        return parse_definition(text, source, functions=self._options.functions)

    def _compile(self, d: LoadedDefinition) -> CompiledWorkflow:
        o = self._options
        return CompiledWorkflow(d, guards=o.guards, actions=o.actions, functions=o.functions,
                                timing=o.timing)

    def register(self, d: LoadedDefinition) -> CompiledWorkflow:
        """Compile ``d``, store its version, and make it the newest of its name."""
        wf = self._compile(d)
        definition = json.dumps(d.spec.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        with self._storage.write() as tx:
            tx.save_workflow_version(wf.name, wf.version, definition, d.source,
                                     to_db(self._clock.now()))
        with self._lock:
            self._versions[(wf.name, wf.version)] = wf
            self._latest[wf.name] = wf
            self._loaded[wf.name] = d
        return wf

    def loaded(self) -> list[LoadedDefinition]:
        """The definitions handed to the engine (the newest of each name)."""
        return list(self._loaded.values())

    def get(self, name: str, version: str | None = None) -> CompiledWorkflow:
        """Workflow ``name`` at ``version`` (its newest loaded version by default)."""
        if version is None:
            try:
                return self._latest[name]
            except KeyError:
                raise UnknownWorkflow(f"no workflow {name!r} is loaded "
                                      f"(loaded: {sorted(self._latest)})") from None
        wf = self._versions.get((name, version))
        if wf is not None:
            return wf
        with self._storage.read() as tx:
            text = tx.workflow_definition(name, version)
        if text is None:
            raise UnknownWorkflow(f"workflow {name!r} has no stored version {version!r}")
        wf = self._compile(self.parse(text, f"<stored {name}@{version}>"))  # JSON is YAML
        with self._lock:
            self._versions[(name, version)] = wf
        return wf

    def latest(self) -> list[CompiledWorkflow]:
        """The newest loaded version of each workflow."""
        return list(self._latest.values())

    def stored_versions(self, name: str) -> list[str]:
        """The versions of ``name`` stored in the database, oldest first."""
        with self._storage.read() as tx:
            return tx.workflow_version_list(name)
