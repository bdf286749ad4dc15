"""The ledger (個案臺帳) of whole cases: export to JSON lines, import into another database.

The work is done at the storage level (:mod:`casework.persistence.ledger`); this module
gives it the engine's clock and errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from .clock import Clock, to_db
from .errors import CaseNotFound, LedgerRefused
from .persistence import ledger
from .persistence.errors import LedgerError
from .persistence.ledger import ImportResult
from .storage import Storage


class Ledger:
    """Exports and imports whole cases with their histories."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

    def export(self, out: TextIO, *, workflow: str | None = None, unit: str | None = None,
               case_ids: Iterable[str] | None = None) -> int:
        try:
            with self._storage.errors():
                return ledger.export_cases(self._storage.store, out, workflow=workflow, unit=unit,
                                           case_ids=case_ids, now=to_db(self._clock.now()))
        except LookupError as e:
            raise CaseNotFound(str(e.args[0])) from None

    def import_(self, inp: TextIO) -> ImportResult:
        try:
            with self._storage.errors():
                return ledger.import_cases(self._storage.store, inp, now=to_db(self._clock.now()))
        except LedgerError as e:
            raise LedgerRefused(str(e), e.problems) from None
