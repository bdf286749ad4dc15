"""The ledger (個案臺帳) of whole cases: export to JSON lines, import into another database.

The file format and the storage checks are :mod:`casework.persistence.ledger`'s; this
module adds the engine's part: an import replays every case's history against the rules
of the workflow versions it ran on (:mod:`casework.replay`), so a history that verifies
but could not have happened is refused; imported cases get this office's party keys
and seals; an export can mask personal data for sharing outside the office.

An export holds personal data in clear (it is the office's own record, to move between
its databases); ``masked=True`` writes a copy for outside readers that cannot be imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TextIO

import orjson

from .assignment import Holder, holders
from .clock import Clock, to_db
from .documents import DocumentStore
from .errors import CaseNotFound, CaseworkError, LedgerRefused
from .machine import CompiledWorkflow
from .persistence import ledger
from .persistence.errors import LedgerError
from .persistence.ledger import ImportResult
from .persistence.tx import ReadTx, WriteTx, dumps
from .registry import Registry
from .replay import replay_problems
from .risk import party_key
from .storage import Storage
from .types import MASK


class Ledger:
    """Exports and imports whole cases with their histories."""

    def __init__(self, storage: Storage, registry: Registry, clock: Clock,
                 documents: DocumentStore | None = None,
                 after_import: Callable[[WriteTx, list[str]], None] | None = None) -> None:
        self._documents = documents or DocumentStore()
        self._after_import = after_import
        self._storage = storage
        self._registry = registry
        self._clock = clock

    def export(self, out: TextIO, *, workflow: str | None = None, unit: str | None = None,
               case_ids: Iterable[str] | None = None, masked: bool = False) -> int:
        try:
            with self._storage.errors():
                return ledger.export_cases(self._storage.store, out, workflow=workflow, unit=unit,
                                           case_ids=case_ids, now=to_db(self._clock.now()),
                                           mask=self._mask if masked else None,
                                           read_document=self._read)
        except LookupError as e:
            raise CaseNotFound(str(e.args[0])) from None

    def _read(self, tx: ReadTx, sha256: str) -> bytes | None:
        got = self._documents.read(tx, sha256)
        return got[1] if got is not None else None

    def _keep(self, tx: WriteTx, sha256: str, media_type: str, content: bytes) -> None:
        self._documents.keep(tx, sha256, media_type, content, to_db(self._clock.now()))

    def _mask(self, row: dict[str, Any], events: list[dict[str, Any]]) -> None:
        try:
            pii = self._registry.get(row["workflow"], row["version"]).pii
        except CaseworkError:
            pii = frozenset(orjson.loads(row["data"]))  # unknown workflow: mask everything
        row["data"] = dumps(_masked(orjson.loads(row["data"]), pii))
        row["party_key"] = None
        row["seal"] = None
        for e in events:
            e["changes"] = dumps(_masked(orjson.loads(e["changes"]), pii))
            e["details"] = dumps(_masked(orjson.loads(e["details"]), pii))

    def import_(self, inp: TextIO) -> ImportResult:
        compiled: dict[tuple[str, str], CompiledWorkflow | None] = {}

        def check(row: dict[str, Any], events: list[dict[str, Any]], definition_of: Any
                  ) -> list[str]:
            def workflow_of(name: str, version: str) -> CompiledWorkflow | None:
                key = (name, version)
                if key not in compiled:
                    compiled[key] = self._workflow(name, version, definition_of)
                return compiled[key]
            return replay_problems(row, events, workflow_of)

        def key_of(row: dict[str, Any]) -> str | None:
            try:
                wf = self._registry.get(row["workflow"], row["version"])
            except CaseworkError:
                return None
            identity = orjson.loads(row["data"]).get(wf.risk_identity) if wf.risk_identity else None
            keyring = self._storage.store.keyring
            if identity in (None, "") or keyring is None:
                return None
            return party_key(keyring.identity, wf.name, identity)

        def held_by(row: dict[str, Any]) -> list[Holder]:
            try:
                wf = self._registry.get(row["workflow"], row["version"])
            except CaseworkError:
                return []
            return holders(wf.slots, orjson.loads(row["data"]), orjson.loads(row["clocks"]))

        try:
            with self._storage.errors():
                return ledger.import_cases(self._storage.store, inp, now=to_db(self._clock.now()),
                                           check_history=check, party_key=key_of,
                                           holders=held_by, keep_document=self._keep,
                                           after_write=self._after_import)
        except LedgerError as e:
            raise LedgerRefused(str(e), e.problems) from None

    def _workflow(self, name: str, version: str, definition_of: Any) -> CompiledWorkflow | None:
        try:
            return self._registry.get(name, version)
        except CaseworkError:
            pass
        text = definition_of(name, version)
        if text is None:
            return None
        try:
            return self._registry.compile(self._registry.parse(text, f"<ledger {name}@{version}>"))
        except CaseworkError:
            return None


def _masked(values: dict[str, Any], pii: frozenset[str]) -> dict[str, Any]:
    return {k: (MASK if k in pii and v not in (None, "") else v) for k, v in values.items()}
