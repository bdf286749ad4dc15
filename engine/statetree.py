"""Nested states flattened to dotted paths (``handling.investigating``).

The runtime machine works on leaf states; this module says which leaves a
compound state covers and which leaf a transition into a compound enters.
"""

from __future__ import annotations

from dataclasses import dataclass

from .definition import StateSpec, WorkflowSpec

SEP = "."


@dataclass(frozen=True)
class StateTree:
    """Every state of a workflow by its dotted path."""

    specs: dict[str, StateSpec]
    children: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, wf: WorkflowSpec) -> StateTree:
        specs: dict[str, StateSpec] = {}
        children: dict[str, tuple[str, ...]] = {}

        def walk(prefix: str, states: dict[str, StateSpec]) -> None:
            for name, spec in states.items():
                path = f"{prefix}{SEP}{name}" if prefix else name
                specs[path] = spec
                children[path] = tuple(f"{path}{SEP}{c}" for c in spec.states)
                walk(path, spec.states)

        walk("", wf.states)
        return cls(specs, children)

    def __contains__(self, path: object) -> bool:
        return path in self.specs

    @property
    def leaves(self) -> tuple[str, ...]:
        return tuple(p for p, kids in self.children.items() if not kids)

    def is_final(self, path: str) -> bool:
        return self.specs[path].final

    def leaves_under(self, path: str) -> tuple[str, ...]:
        """The leaf states a transition from ``path`` applies to."""
        kids = self.children[path]
        if not kids:
            return (path,)
        out: list[str] = []
        for k in kids:
            out.extend(self.leaves_under(k))
        return tuple(out)

    def entry_leaf(self, path: str) -> str | None:
        """The leaf entered when a transition goes to ``path`` (None if undefined)."""
        seen = set()
        while self.children.get(path):
            if path in seen:
                return None
            seen.add(path)
            initial = self.specs[path].initial
            if initial is None:
                return None
            path = f"{path}{SEP}{initial}"
            if path not in self.specs:
                return None
        return path if path in self.specs else None

    def ancestors(self, path: str) -> tuple[str, ...]:
        """``path`` and every compound state that contains it, innermost first."""
        parts = path.split(SEP)
        return tuple(SEP.join(parts[:i]) for i in range(len(parts), 0, -1))
