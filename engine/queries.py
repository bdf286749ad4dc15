"""Reading cases: a case, its history, what an actor may do now, its timers, counts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from . import rules
from .clock import Clock
from .convert import case_of, event_of, timer_of
from .documents import DocumentStore
from .errors import CaseNotFound, InvalidQuery
from .registry import Registry
from .storage import Storage
from .timers import instants
from .types import Actor, Case, Deadline, Event, Timer, TriggerOption


class Queries:
    """Read-only questions about stored cases."""

    def __init__(self, storage: Storage, registry: Registry, clock: Clock,
                 documents: DocumentStore | None = None) -> None:
        self._documents = documents or DocumentStore()
        self._storage = storage
        self._registry = registry
        self._clock = clock

    def case(self, case_id: str, *, masked: bool = False) -> Case:
        with self._storage.read() as tx:
            rec = tx.get_case(case_id)
        if rec is None:
            raise CaseNotFound(case_id)
        case = case_of(rec)
        if masked:
            case = case.masked(self._registry.get(case.workflow, case.version).pii)
        return case

    def history(self, case_id: str, *, masked: bool = False) -> list[Event]:
        with self._storage.read() as tx:
            rec = tx.get_case(case_id)
            if rec is None:
                raise CaseNotFound(case_id)
            events = [event_of(e) for e in tx.history(case_id)]
        if masked:
            pii = self._registry.get(rec.workflow, rec.version).pii
            events = [e.masked(pii) for e in events]
        return events

    def options(self, case_id: str, actor: Actor) -> list[TriggerOption]:
        with self._storage.read() as tx:
            rec = tx.get_case(case_id)
        if rec is None:
            raise CaseNotFound(case_id)
        wf = self._registry.get(rec.workflow, rec.version)
        # The stored clocks, with the engine's own entries (windows, stand-ins) that the
        # host's view of the case leaves out: the rules read them, as fire's do.
        return rules.options(wf, rec.id, rec.state, rec.data, actor, self._clock.now(),
                             rec.clocks)

    def deadlines(self, case_id: str) -> list[Deadline]:
        case = self.case(case_id)
        wf = self._registry.get(case.workflow, case.version)
        out = []
        for v in wf.timing.clocks_view(case.clocks, self._clock.now()):
            left = v["time_left"]
            out.append(Deadline(
                v["name"], v["status"], v["counting"], v["calendar"], v["calendar_data"],
                v["started"], v["due"], timedelta(seconds=v["business_elapsed"]),
                timedelta(seconds=v["actual_elapsed"]),
                timedelta(seconds=left) if left is not None else None,
                timedelta(seconds=v["allowed"] or 0), v["breaches"], v["provisional"],
                tuple(v["paused"])))
        return out

    def pending_timers(self, case_id: str) -> list[Timer]:
        with self._storage.read() as tx:
            rows = tx.pending_timers(case_id)
        out = [timer_of(i) for t in rows for i in instants(t)]
        out.sort(key=lambda t: (t.due_at, t.id))
        return out

    def state_counts(self, workflow: str) -> dict[str, tuple[int, int]]:
        with self._storage.read() as tx:
            return {s: (n, o) for s, n, o in tx.open_by_state(workflow)}

    def stored_counts(self) -> tuple[int, int]:
        with self._storage.read() as tx:
            return tx.count_cases(), tx.count_events()

    def verify(self, case_id: str | None = None) -> list[str]:
        with self._storage.read() as tx:
            if case_id is not None:
                found = tx.verify_case(case_id)
            else:
                found = [p for _, problems in tx.verify_all() for p in problems]
            by_case: dict[str, list[tuple[int, dict[str, Any]]]] = {}
            for cid, seq, ref in tx.document_refs(case_id):
                by_case.setdefault(cid, []).append((seq, ref))
            for cid, refs in by_case.items():
                found += self._documents.problems(tx, cid, refs)
        return found

    def document(self, sha256: str) -> tuple[str, bytes]:
        """(media type, content) of a document of the case file."""
        with self._storage.read() as tx:
            got = self._documents.read(tx, sha256)
        if got is None:
            raise InvalidQuery(f"no document {sha256!r}")
        return got
