"""Display names from a workflow definition: the ``label`` of states, triggers, activities,
fields and assignment slots, and an enum field's ``value_labels``.

A definition may name what people see in their own language (``label: 受理``); where it
does not, the definition's own name is shown. The console and the pictures take their
words from here, so both say the same thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..definition import FieldSpec, StateSpec, WorkflowSpec

__all__ = ["Labels"]

SEP = "."


class Labels:
    """The display names of one workflow version (``Labels(None)``: every name as it is)."""

    def __init__(self, spec: WorkflowSpec | None) -> None:
        self.spec = spec
        self._states: dict[str, str] = {}
        self._triggers: dict[str, str] = {}
        if spec is None:
            return

        def walk(prefix: str, states: dict[str, StateSpec]) -> None:
            for name, st in states.items():
                path = f"{prefix}{SEP}{name}" if prefix else name
                if st.label:
                    self._states[path] = st.label
                walk(path, st.states)

        walk("", spec.states)
        for t in spec.transitions:
            if t.label and t.trigger not in self._triggers:
                self._triggers[t.trigger] = t.label
        for name, a in spec.activities.items():
            if a.label:
                self._triggers.setdefault(name, a.label)

    def has(self, kind: str, name: str) -> bool:
        """Whether the definition gives ``name`` (a ``state`` or ``trigger``) a label."""
        return name in (self._states if kind == "state" else self._triggers)

    def state(self, path: str | None) -> str:
        """A state's label (a leaf's own; unlabelled: the last part of its path)."""
        if not path:
            return ""
        return self._states.get(path) or path.rsplit(SEP, 1)[-1]

    def state_path(self, path: str | None) -> str:
        """A leaf with the compound states above it: ``办理中 / 调查处理``."""
        if not path:
            return ""
        parts = path.split(SEP)
        return " / ".join(self.state(SEP.join(parts[:i + 1])) for i in range(len(parts)))

    def trigger(self, name: str | None) -> str:
        """A transition's or an activity's label (else its name)."""
        if not name:
            return ""
        return self._triggers.get(name, name)

    def _field_spec(self, name: str, activity: str | None = None) -> FieldSpec | None:
        if self.spec is None:
            return None
        if activity is not None:
            act = self.spec.activities.get(activity)
            if act is not None and name in act.fields:
                return act.fields[name]
        return self.spec.fields.get(name)

    def field(self, name: str, activity: str | None = None) -> str:
        """A field's label (an activity's own field first, then the case's)."""
        spec = self._field_spec(name, activity)
        return (spec.label if spec is not None and spec.label else name)

    def value(self, name: str, value: Any, activity: str | None = None) -> str:
        """An enum value's label; any other value as text (lists joined, booleans as ✓/✗)."""
        spec = self._field_spec(name, activity)
        if isinstance(value, bool):
            return "✓" if value else "✗"
        if isinstance(value, list | tuple):
            return ", ".join(self.value(name, v, activity) for v in value)
        if value is None:
            return ""
        text = str(value)
        if spec is not None and spec.value_labels:
            return spec.value_labels.get(text, text)
        return text

    def slot(self, name: str) -> str:
        if self.spec is None:
            return name
        s = self.spec.assignment.slots.get(name)
        return s.label if s is not None and s.label else self.field(name)

    def rung(self, level: int) -> str:
        """The escalation rung a case at ``level`` has reached (``""`` at level 0)."""
        if level <= 0:
            return ""
        if self.spec is None or not self.spec.escalation:
            return str(level)
        rungs = self.spec.escalation
        return rungs[min(level, len(rungs)) - 1].name
