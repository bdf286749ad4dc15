"""Every error the engine raises, in one tree.

    CaseworkError                      HTTP status a web host maps it to
    ├── DefinitionError          422   a workflow file is invalid (every problem, with file:line)
    ├── SettingsError            500   a settings file is invalid (found at start-up)
    ├── MissingExtra             501   a feature needs an optional extra that is not installed
    ├── UnknownWorkflow          404   no workflow of that name (or version) is loaded
    ├── CaseNotFound             404   no case with that id
    ├── CommandRefused                 a command was refused by a rule; nothing was written
    │   ├── InvalidTrigger       404   the trigger or activity does not exist in the workflow
    │   ├── WrongState           409   the trigger is not allowed from the case's current state
    │   ├── RoleRefused          403   the actor holds none of the roles the step allows
    │   ├── ScopeRefused         403   the actor is not whom the step's scope admits on this case
    │   ├── WindowClosed         409   the step's window (e.g. to ask for a review) is not open
    │   ├── MissingFields        422   required input fields are missing
    │   ├── InvalidInput         422   input is unknown, of the wrong type or out of range
    │   └── GuardRefused         409   the guard expression (or a named guard) said no
    ├── ConflictError            409   the case changed since it was read (stale row version;
    │   │                              412 when the version came as an HTTP If-Match)
    │   └── CaseExists           409   a case with that id exists already
    ├── CaseAltered              409   the case row or its history was changed outside the engine
    ├── IdempotencyKeyReused     422   a key already used for a different command
    ├── InvalidQuery             422   a report, search or migration asked for something unknown
    ├── LedgerRefused            422   a ledger file was refused whole (every problem listed)
    ├── UnknownCalendarYear      422   a strict calendar met a year it has no holidays for
    └── StoreError               503   the database failed, or its schema does not match the code

Each error says what was refused and where (case, state, trigger, file:line), and
never carries the value of a personal (``pii``) field.
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


class MissingExtra(CaseworkError):
    """A feature needs an optional part of casework that is not installed."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        self.feature = feature
        self.extra = extra
        super().__init__(f"{feature} needs the '{extra}' extra ({missing} is not installed): "
                         f"pip install 'casework[{extra}]'")


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


class ScopeRefused(CommandRefused):
    """The actor holds the role but is not whom the step's scope admits on this case (its
    handler, its leader, its lead unit...); the message names the scope."""

    rule = "scope"


class WindowClosed(CommandRefused):
    """The step may be taken only while a window is open (or after it closed), and now it
    is not; the message names the window, when it opened and when it closes."""

    rule = "window"


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


class CaseExists(ConflictError):
    """A case with the id given to ``open_case`` exists already."""

    def __init__(self, case_id: str) -> None:
        CaseworkError.__init__(self, f"a case with id {case_id!r} exists already")
        self.case_id = case_id
        self.expected = None
        self.actual = None


class CaseAltered(CaseworkError):
    """The case's stored row does not match its seal: it was changed outside the engine
    (run ``verify``); nothing acts on it until an operator has looked."""

    def __init__(self, case_id: str, why: str) -> None:
        self.case_id = case_id
        super().__init__(f"case {case_id}: refused: {why}")


class IdempotencyKeyReused(CaseworkError):
    """An idempotency key was already used for a different command."""


class InvalidQuery(CaseworkError):
    """A report, search or migration named something the workflow does not have."""


class LedgerRefused(CaseworkError):
    """A ledger file was refused whole: nothing of it was written.

    ``problems`` lists every problem found, each naming its line and case.
    """

    def __init__(self, message: str, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(message)


class UnknownCalendarYear(CaseworkError):
    """A working-day computation reached a year the holiday calendar does not know
    (only with ``[calendars] strict = true``; otherwise the deadline is provisional)."""


class StoreError(CaseworkError):
    """The database failed, or its schema does not match this code."""
