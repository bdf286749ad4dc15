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


class DuplicateKey(PersistenceError):
    """An idempotency key is already stored (a concurrent command used it first)."""


class DatabaseUnavailable(PersistenceError):
    """The database could not be reached or stayed locked past the busy timeout."""
