"""Every error the engine raises, in one tree.

    CaseworkError
    ├── DefinitionError          a workflow file is invalid (lists every problem with file:line)
    ├── SettingsError            a settings file is invalid
    ├── UnknownWorkflow          no workflow of that name (or version) is loaded
    ├── CaseNotFound             no case with that id
    ├── CommandRefused           a command was refused by a rule; nothing was written
    │   ├── InvalidTrigger       the trigger or activity does not exist in the workflow
    │   ├── WrongState           the trigger is not allowed from the case's current state
    │   ├── RoleRefused          the actor holds none of the roles the transition allows
    │   ├── MissingFields        required input fields are missing
    │   ├── InvalidInput         input fields are unknown or of the wrong type
    │   └── GuardRefused         the guard expression (or a named guard) said no
    ├── ConflictError            the case changed since it was read (stale row version)
    ├── IdempotencyKeyReused     a key already used for a different command
    └── StoreError               the database failed or its schema does not match the code

Each error says what was refused and where (case, state, trigger, file:line).
"""

from __future__ import annotations

from dataclasses import dataclass


class CaseworkError(Exception):
    """Base of every error the engine raises."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a definition or settings file."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class DefinitionError(CaseworkError):
    """A workflow definition is invalid; ``problems`` lists every one found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in workflow definition:\n{lines}")


class SettingsError(CaseworkError):
    """A settings file is invalid."""


class UnknownWorkflow(CaseworkError):
    """No workflow of that name or version is loaded."""


class CaseNotFound(CaseworkError):
    """No case with that id exists."""

    def __init__(self, case_id: str) -> None:
        self.case_id = case_id
        super().__init__(f"case {case_id!r} not found")


class CommandRefused(CaseworkError):
    """A command was refused by a rule of the workflow; nothing was written."""

    rule = "refused"

    def __init__(self, message: str, *, case_id: str | None = None, state: str | None = None,
                 trigger: str | None = None) -> None:
        self.case_id = case_id
        self.state = state
        self.trigger = trigger
        where = []
        if case_id is not None:
            where.append(f"case {case_id}")
        if state is not None:
            where.append(f"state {state!r}")
        if trigger is not None:
            where.append(f"trigger {trigger!r}")
        prefix = f"[{self.rule}] " + (", ".join(where) + ": " if where else "")
        self.reason = message
        super().__init__(prefix + message)


class InvalidTrigger(CommandRefused):
    rule = "unknown trigger"


class WrongState(CommandRefused):
    rule = "state"


class RoleRefused(CommandRefused):
    rule = "role"


class MissingFields(CommandRefused):
    rule = "required fields"


class InvalidInput(CommandRefused):
    rule = "input"


class GuardRefused(CommandRefused):
    rule = "guard"


class ConflictError(CaseworkError):
    """The case was changed by another command since it was read."""

    def __init__(self, case_id: str, expected: int | None, actual: int | None) -> None:
        self.case_id = case_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"case {case_id}: stale row version (expected {expected}, the case is at {actual}); "
            "reload the case and try again"
        )


class IdempotencyKeyReused(CaseworkError):
    """An idempotency key was already used for a different command."""


class StoreError(CaseworkError):
    """The database failed, or its schema does not match this code."""
