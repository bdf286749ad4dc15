"""Durable storage for casework: tables, transactions, locking, the event chain.

This package knows nothing of the engine; the engine uses it through
:class:`persistence.store.Store`.
"""

from .chain import Keyring
from .errors import DatabaseUnavailable, DuplicateKey, PersistenceError, RowAltered, StaleVersion
from .records import CaseRecord, EventRecord, NewTimer, TimerRecord
from .store import Store

__all__ = [
    "CaseRecord",
    "DatabaseUnavailable",
    "DuplicateKey",
    "EventRecord",
    "Keyring",
    "NewTimer",
    "PersistenceError",
    "RowAltered",
    "StaleVersion",
    "Store",
    "TimerRecord",
]
