"""Durable storage for casework: tables, transactions, locking, the event chain.

This package knows nothing of the engine; the engine uses it through
:class:`persistence.store.Store`.
"""

from .errors import DatabaseUnavailable, DuplicateKey, PersistenceError, StaleVersion
from .records import CaseRecord, EventRecord, NewTimer, TimerRecord
from .store import Store

__all__ = [
    "CaseRecord",
    "DatabaseUnavailable",
    "DuplicateKey",
    "EventRecord",
    "NewTimer",
    "PersistenceError",
    "StaleVersion",
    "Store",
    "TimerRecord",
]
