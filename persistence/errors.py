"""Errors of the storage layer; the engine turns them into its own errors."""

from __future__ import annotations


class PersistenceError(Exception):
    """The database refused or failed an operation."""


class StaleVersion(PersistenceError):
    """An update expected a row version the row no longer has."""

    def __init__(self, case_id: str, expected: int, actual: int | None) -> None:
        self.case_id = case_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"case {case_id}: expected row version {expected}, found {actual}")


class RowAltered(PersistenceError):
    """A case row does not match its seal: it was changed outside the engine."""

    def __init__(self, case_id: str, why: str) -> None:
        self.case_id = case_id
        self.why = why
        super().__init__(f"case {case_id}: {why}")


class DuplicateKey(PersistenceError):
    """An idempotency key is already stored (a concurrent command used it first)."""


class DatabaseUnavailable(PersistenceError):
    """The database could not be reached or stayed locked past the busy timeout."""


class LedgerError(PersistenceError):
    """A ledger file was refused whole: nothing of it was written.

    ``problems`` lists every problem found, each naming its line and case.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(f"the ledger was refused and nothing was imported ({n} problem"
                         f"{'' if n == 1 else 's'}):\n" + "\n".join(f"  {p}" for p in self.problems))
