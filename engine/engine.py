"""The Engine: the one object a host holds.

It builds the services and hands each only what it needs (the storage, the workflow
registry, the clock, options): :class:`Commands` (open, fire), :class:`Queries`,
:class:`Outbox`, :class:`Scheduler`, reports, :class:`Migrator`, :class:`Ledger`.
No service knows the facade. One Engine is safe to share between the threads of a
process (a web server's worker pool); close it at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO

from loguru import logger
from sqlalchemy.exc import ArgumentError

from .calendars import DeclaredYear, declared_disagreements
from .clock import Clock, FrozenClock, SystemClock
from .commands import Commands, parse_actor
from .convert import timer_of
from .documents import Document, DocumentLimits, DocumentStore
from .errors import SettingsError, StoreError
from .events import Subscribers
from .figures import FiguresCheck, Tally
from .keys import default_key_file, load_or_create
from .ledger import Ledger
from .machine import NamedAction, NamedGuard, TimingOptions
from .migration import MigrationResult, Migrator, Override
from .outbox import NOTICE_LEASE, Outbox
from .persistence import Keyring, Store
from .persistence.ledger import ImportResult
from .persistence.migrate import SchemaMismatch
from .persistence.rekey import RekeyResult, rekey
from .queries import Queries
from .registry import CompileOptions, Registry, WorkflowSource
from .reports import Report, build_report
from .scheduler import RunResult, Scheduler, SchedulerService
from .search import CasePage, Search
from .settings import load_settings
from .storage import Storage
from .timers import SensitivePeriod
from .types import Actor, Case, Deadline, Event, Timer, TriggerOption
from .whatif import Proposal, WhatIf, simulate
from .workflow import Workflow

ActorLike = Actor | str


class Engine:
    """Runs workflows over durable cases. Safe to share between threads.

    ``database_url``: a SQLite file (``sqlite:///cases.db``, the default) or PostgreSQL
    (``postgresql+psycopg://...``, the ``postgres`` extra). ``workflows``: definition
    files, names of the shipped workflows (``"petition"``), or loaded definitions.
    ``clock``: where time comes from (a :class:`FrozenClock` in tests). ``guards``,
    ``actions``, ``functions``: named Python hooks the definitions may call.
    ``scheduler``: ``interval_seconds``, ``batch_size``, ``lease_seconds``,
    ``notice_lease_seconds``. ``durable_notices``: every notice (commands' too) is written
    to the outbox with its event and handed to subscribers from a thread of the engine's,
    at least once (a web service's webhooks), instead of right after each command.
    ``key_file``: the office's keys for the keyed history
    (default: ``<database>.key`` beside a SQLite file, created on first use; see
    :mod:`casework.keys`), or a ``keyring`` directly.
    """

    def __init__(self, database_url: str = "sqlite:///casework.db",
                 workflows: Iterable[WorkflowSource] = (), *,
                 clock: Clock | None = None, sqlite_synchronous: str = "FULL",
                 busy_timeout_ms: int = 10_000, pool_size: int = 5,
                 guards: Mapping[str, NamedGuard] | None = None,
                 actions: Mapping[str, NamedAction] | None = None,
                 functions: Mapping[str, Callable[..., Any]] | None = None,
                 calendars: Mapping[str, str] | None = None, strict_calendar: bool = False,
                 declared_years: Mapping[int, DeclaredYear] | None = None,
                 closing_times: Mapping[str, time] | None = None,
                 sensitive_periods: Iterable[SensitivePeriod] = (),
                 scheduler: Mapping[str, Any] | None = None,
                 retries: int = 5,
                 key_file: str | Path | None = None, keyring: Keyring | None = None,
                 documents: DocumentLimits | None = None, durable_notices: bool = False,
                 create_schema: bool = True) -> None:
        self.clock: Clock = clock or SystemClock()
        # How this engine was built, for the throwaway engines of what-if.
        self._built: dict[str, Any] = {"documents": documents, "guards": guards,
                                       "actions": actions, "functions": functions,
                       "calendars": calendars, "strict_calendar": strict_calendar,
                       "declared_years": declared_years, "closing_times": closing_times,
                       "sensitive_periods": tuple(sensitive_periods), "scheduler": scheduler}
        opts = dict(scheduler or {})
        self._service_options = {k: v for k, v in opts.items()
                                 if k in {"interval_seconds", "batch_size", "lease_seconds"}}
        self._service: SchedulerService | None = None
        if keyring is None:
            keyring = load_or_create(Path(key_file) if key_file is not None
                                     else default_key_file(database_url))
        self._keyring = keyring
        try:
            store = Store(database_url, sqlite_synchronous=sqlite_synchronous,
                          busy_timeout_ms=busy_timeout_ms, pool_size=pool_size, keyring=keyring)
        except (ValueError, TypeError, ArgumentError) as e:
            raise SettingsError(f"the database cannot be opened: {e}") from None
        self._storage = Storage(store)
        if create_schema:
            try:
                with self._storage.errors():
                    self._storage.store.prepare_schema()
            except SchemaMismatch as e:
                raise StoreError(str(e)) from None
        timing = TimingOptions(dict(calendars or {}), strict_calendar, tuple(sensitive_periods),
                               dict(declared_years or {}), dict(closing_times or {}))
        self._declared = dict(declared_years or {})
        self._registry = Registry(self._storage, self.clock, CompileOptions(
            dict(guards or {}), dict(actions or {}), dict(functions or {}), timing))
        registry = self._registry
        self._tally = Tally(self._storage, self._registry, self.clock)
        self._storage.on_written(self._tally.flush)
        self._subscribers = Subscribers(lambda name, version: registry.get(name, version).pii)
        self._outbox = Outbox(self._storage, self._subscribers, self.clock, lease=timedelta(
            seconds=opts.get("notice_lease_seconds", NOTICE_LEASE.total_seconds())))
        docs = DocumentStore(documents)
        self._commands = Commands(self._storage, self._registry, self.clock, self._subscribers,
                                  self._outbox, retries=retries, documents=docs,
                                  durable_notices=durable_notices)
        self._queries = Queries(self._storage, self._registry, self.clock, docs)
        self._scheduler = Scheduler(self._storage, self._registry, self.clock, self._outbox,
                                    batch_size=opts.get("batch_size", 200),
                                    lease=timedelta(seconds=opts.get("lease_seconds", 60)))
        self._migrator = Migrator(self._storage, self._registry, self.clock)
        self._search = Search(self._storage, self._registry, self.clock)
        self._ledger = Ledger(self._storage, self._registry, self.clock, docs,
                              after_import=self._tally.add_cases)
        self._registry.load(workflows)
        self._scheduler.ensure_cron_timers(self.clock.now())
        if durable_notices:
            self._outbox.start_background()
        for problem in self.calendar_problems():
            logger.bind(case_id="-", workflow="-").warning("declared calendar: {}", problem)

    @classmethod
    def from_settings(cls, path: str | Path, **overrides: Any) -> Engine:
        """Build an engine from a TOML settings file (see ``config/casework.toml``)."""
        s = load_settings(path)
        kwargs: dict[str, Any] = {
            "sqlite_synchronous": s.database.sqlite_synchronous,
            "busy_timeout_ms": s.database.busy_timeout_ms,
            "pool_size": s.database.pool_size,
            "calendars": dict(s.calendars.workflows),
            "strict_calendar": s.calendars.strict,
            "declared_years": s.calendars.declared(),
            "closing_times": dict(s.calendars.closing),
            "documents": s.document_limits(),
            "key_file": s.key_file(),
            "sensitive_periods": [SensitivePeriod(p.name, p.start, p.end, p.warn_factor)
                                  for p in s.sensitive_periods],
            "scheduler": s.scheduler.model_dump(),
        }
        kwargs.update(overrides)
        url = kwargs.pop("database_url", None) or s.database_url()
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(url, s.workflow_files(), **kwargs)

    @property
    def database_url(self) -> str:
        """The database this engine runs on (as given)."""
        return self._storage.store.url

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._storage.backend

    # -- workflows ---------------------------------------------------------
    def workflow(self, name: str, version: str | None = None) -> Workflow:
        """Workflow ``name`` as loaded (its newest version unless one is named)."""
        return self._registry.get(name, version).describe()

    @property
    def workflows(self) -> dict[str, Workflow]:
        """The newest loaded version of each workflow, by name."""
        return {wf.name: wf.describe() for wf in self._registry.latest()}

    def calendar_problems(self) -> list[str]:
        """Where a year's schedule declared in the settings disagrees with the holiday
        package, now that the package knows that year (empty: they agree, or the package
        does not know the year yet)."""
        return declared_disagreements(self._declared)

    def workflow_versions(self, workflow: str) -> list[str]:
        """The versions of ``workflow`` stored in the database, oldest first."""
        return self._registry.stored_versions(workflow)

    def on(self, name: str, fn: Callable[[Any], None], *, durable: bool = False) -> None:
        """Call ``fn`` after each committed ``name`` notice (``opened``, ``transition``,
        ``activity``, ``assigned``, ``delegated``, ``warned``, ``escalated``, ``cycle``,
        ``flagged``, ``report``, ``*``). A ``durable`` subscriber that raises on a notice
        from the outbox leaves it to be handed over again (with ``durable_notices``, every
        notice comes from the outbox: at least once, never lost)."""
        self._subscribers.add(name, fn, durable=durable)

    # -- commands ----------------------------------------------------------
    def open_case(self, workflow: str, data: Mapping[str, Any] | None = None, *,
                  actor: ActorLike, case_id: str | None = None,
                  idempotency_key: str | None = None,
                  documents: Sequence[Document] = ()) -> Case:
        """Open a case of ``workflow`` in its initial state, with ``data`` (and the
        ``documents`` it arrived with: a scanned letter)."""
        return self._commands.open_case(workflow, data, actor, case_id=case_id,
                                        idempotency_key=idempotency_key, documents=documents)

    def fire(self, case_id: str, trigger: str, *, actor: ActorLike,
             data: Mapping[str, Any] | None = None, expected_version: int | None = None,
             idempotency_key: str | None = None,
             documents: Sequence[Document] = ()) -> Case:
        """Fire ``trigger`` (a transition or an activity) on a case; the case after it.

        ``expected_version`` is the case's ``row_version`` as the caller last read it: a
        case that moved on since raises :class:`ConflictError` and nothing is written.
        """
        return self._commands.fire(case_id, trigger, actor, data=data,
                                   expected_version=expected_version,
                                   idempotency_key=idempotency_key, documents=documents)

    def assign(self, case_id: str, slot: str, value: Any, *, actor: ActorLike,
               reason: str | None = None, idempotency_key: str | None = None) -> Case:
        """Put ``value`` in the case's assignment ``slot`` (a person's id for ``handler``, a
        unit for ``lead_unit``, a list of units for ``assisting_units``); a slot already held
        is reassigned, with a reason. An ``assignment`` event; the ``assigned`` notice."""
        return self._commands.assign(case_id, slot, value, actor, reason=reason,
                                     idempotency_key=idempotency_key)

    def delegate(self, case_id: str, slot: str, stand_in: str, *, actor: ActorLike,
                 until: datetime, reason: str | None = None,
                 idempotency_key: str | None = None) -> Case:
        """Name a stand-in (代辦) for the person in ``slot`` until ``until``: meanwhile the
        stand-in may do what the slot's holder may; the period ends by itself."""
        return self._commands.delegate(case_id, slot, stand_in, actor, until=until,
                                       reason=reason, idempotency_key=idempotency_key)

    def recompute_deadlines(self, *, provisional_only: bool = True,
                            adopt_calendar: bool = False) -> int:
        """Reschedule running deadlines (e.g. after the holiday package learnt a new year),
        each case in its own transaction with a ``deadline`` event; how many changed. Each
        clock keeps the calendar it was started with unless ``adopt_calendar`` moves the
        running ones onto the workflow's calendar of today (recorded in the event)."""
        return self._commands.recompute_deadlines(provisional_only=provisional_only,
                                                  adopt_calendar=adopt_calendar)

    # -- queries -----------------------------------------------------------
    def get_case(self, case_id: str, *, masked: bool = False) -> Case:
        """The case as stored now (``masked``: personal fields replaced by ``***``)."""
        return self._queries.case(case_id, masked=masked)

    def history(self, case_id: str, *, masked: bool = False) -> list[Event]:
        """The case's events, oldest first."""
        return self._queries.history(case_id, masked=masked)

    def available_triggers(self, case_id: str, actor: ActorLike) -> list[TriggerOption]:
        """What ``actor`` may do on the case now, and for each refused option, why not (the
        same rules :meth:`fire` applies). A guard that reads input not given yet is left to
        ``fire``: such an option is listed as allowed with the input it requires."""
        return self._queries.options(case_id, parse_actor(actor))

    def deadlines(self, case_id: str) -> list[Deadline]:
        """The case's deadline clocks: due, business and actual elapsed time, time left,
        paused stretches, each on the calendar and counting it was started with."""
        return self._queries.deadlines(case_id)

    def pending_timers(self, case_id: str) -> list[Timer]:
        """The case's timer instants that have not fired yet, soonest first (a deadline's
        warnings and breach are one stored row, listed here one instant each)."""
        return self._queries.pending_timers(case_id)

    def state_counts(self, workflow: str) -> dict[str, tuple[int, int]]:
        """Open and overdue cases of ``workflow`` per state: {state: (open, overdue)}."""
        return self._queries.state_counts(workflow)

    def stored_counts(self) -> tuple[int, int]:
        """How many cases and events the database holds."""
        return self._queries.stored_counts()

    def verify(self, case_id: str | None = None) -> list[str]:
        """Problems in the history of one case or of every case (empty when intact): its
        keyed chain, its row against the chain and the fold of its events, its documents
        against their digests."""
        return self._queries.verify(case_id)

    def document(self, sha256: str) -> tuple[str, bytes]:
        """(media type, content) of a document of the case file, by its digest (as the
        events that brought it name it)."""
        return self._queries.document(sha256)

    def cases(self, **filters: Any) -> CasePage:
        """Search the cases: ``workflow``, ``state`` (a compound state: all its children),
        ``unit`` (the lead unit), ``assignee`` (a person's id, or ``@unit``), ``source``,
        ``opened_after``/``opened_before``, ``updated_after``/``updated_before``,
        ``due_after``/``due_before`` (the next deadline), ``overdue``, ``at_risk``,
        ``min_escalation``, ``fields`` (those the definition declares in ``search``),
        ``same_petitioner_as`` (a case id: that petitioner's other cases, by their keyed
        identity), ``include_closed``; ``sort`` = ``due`` (default), ``opened`` or
        ``updated``; ``cursor`` (from the page before), ``limit`` (up to 500); ``count``:
        also how many match. Open cases only unless ``include_closed``."""
        return self._search.cases(**filters)

    def worklist(self, actor: ActorLike, *, of: str = "mine",
                 units: Iterable[str] | None = None, cursor: str | None = None,
                 limit: int = 50) -> CasePage:
        """The cases ``actor`` can act on now, most urgent first, each with what it allows
        (the same rules as :meth:`fire`); ``of="unit"``: the cases of the actor's unit;
        ``of="supervised"``: the overdue and escalated cases of ``units`` (all by default)."""
        return self._search.worklist(parse_actor(actor), of=of, units=units, cursor=cursor,
                                     limit=limit)

    def report(self, workflow: str, *, start: date | datetime | str | None = None,
               end: date | datetime | str | None = None, by: str | None = None,
               where: Mapping[str, Any] | None = None, source: str = "auto") -> Report:
        """The figures ``workflow`` declares for ``[start, end)``.

        ``by`` breaks them down by a case field (``unit``, ``source``...); ``where`` keeps
        the cases whose fields match (a value, a list, or a declared group's name).
        ``source``: ``figures`` reads the figures each command maintains (a few rows per
        day; periods from local midnight to local midnight, no ``where``), ``events``
        counts from the cases and events, ``auto`` (the default) the figures wherever
        they can answer. :attr:`Report.source` says which answered.
        """
        with self._storage.errors():
            return build_report(self._storage, self._registry, self.clock, workflow,
                                start=start, end=end, by=by, where=where, source=source,
                                tally=self._tally)

    def rebuild_figures(self, workflow: str | None = None, *,
                        check: bool = False) -> list[FiguresCheck]:
        """Recompute the maintained report figures of ``workflow`` (every workflow with a
        report if None) from the cases and events; with ``check``, change nothing and name
        every difference between the stored figures and the events."""
        names = [workflow] if workflow is not None else [w.name for w in self._registry.latest()]
        with self._storage.errors():
            return [self._tally.check(n) if check else self._tally.rebuild(n)
                    for n in names if self._tally.plan(n) is not None]

    def what_if(self, case_id: str, proposals: Sequence[Proposal], *,
                until: datetime) -> WhatIf:
        """What the case would meet until ``until`` if ``proposals`` were sent (an extension,
        a pause, a reassignment), beside what it meets if nothing is done: the deadlines,
        warnings and escalations, on the real code path, with nothing written here."""
        return simulate(self, case_id, proposals, until, self.clock.now(), self._sandbox)

    def _sandbox(self, url: str, clock: FrozenClock) -> Engine:
        return Engine(url, self._registry.loaded(), clock=clock, keyring=self._keyring,
                      sqlite_synchronous="OFF", **self._built)

    # -- the scheduler -----------------------------------------------------
    def run_due(self, now: datetime | None = None, **options: Any) -> RunResult:
        """Fire every timer due at ``now`` (the clock's time by default), each exactly once.

        Options: ``batch_size``, ``owner``, ``lease`` (timedelta), ``limit``.
        """
        return self._scheduler.run_due(now or self.clock.now(), **options)

    def start_scheduler(self, **options: Any) -> SchedulerService:
        """Run the scheduler in the background (APScheduler): the sweep and the cron cycles.
        In a web app with several worker processes, every worker may run one: timers and
        notices are claimed, so each fires and is delivered once."""
        if self._service is None:
            self._service = SchedulerService(self._scheduler,
                                             **{**self._service_options, **options})
        self._service.start()
        return self._service

    def stop_scheduler(self, wait: bool = True) -> None:
        """Stop the background scheduler; the batch in hand is finished first."""
        if self._service is not None:
            self._service.stop(wait=wait)

    def failed_timers(self, limit: int = 500) -> list[Timer]:
        """Timers set aside because they raised when they fired (nothing fires them again
        until :meth:`retry_timer`)."""
        return [timer_of(t) for t in self._scheduler.failed(limit)]

    def retry_timer(self, timer_id: int, *, actor: ActorLike) -> bool:
        """Put a failed timer back, to fire at the next sweep; the retry is recorded on its
        case. False if the timer was not failed."""
        return self._scheduler.retry(timer_id, str(parse_actor(actor)))

    def deliver_notices(self, limit: int = 500) -> int:
        """Hand the outbox's undelivered notices to this engine's subscribers; how many."""
        return self._outbox.deliver(limit)

    # -- migration and the ledger ------------------------------------------
    def migrate(self, workflow: str, to_version: str, mapping: Mapping[str, str] | None = None, *,
                dry_run: bool = True, actor: str = "operator",
                override_reason: str | None = None,
                approved_by: str | None = None) -> MigrationResult:
        """Move ``workflow``'s open cases to ``to_version`` (a dry run unless told otherwise).

        ``to_version`` is a stored version or ``"latest"`` (the loaded definition). A case
        is never moved into a final state, nor into a state whose entry rules its data does
        not meet, unless ``override_reason`` and ``approved_by`` are given (recorded in the
        migration event); the result lists every refusal and why.
        """
        override = None
        if override_reason is not None or approved_by is not None:
            override = Override(override_reason or "", approved_by or "")
        return self._migrator.migrate(workflow, to_version, mapping or {}, dry_run=dry_run,
                                      actor=actor, override=override)

    def export_cases(self, out: TextIO, *, workflow: str | None = None, unit: str | None = None,
                     case_ids: Iterable[str] | None = None, masked: bool = False) -> int:
        """Write the ledger (JSON lines) of the chosen cases to ``out``; how many cases.
        ``unit`` keeps the cases whose data field ``unit`` has that value. The ledger holds
        personal data in clear; ``masked`` writes a copy with it masked, for readers
        outside the office (such a copy cannot be imported)."""
        return self._ledger.export(out, workflow=workflow, unit=unit, case_ids=case_ids,
                                   masked=masked)

    def import_cases(self, inp: TextIO) -> ImportResult:
        """Import a ledger whole, in one transaction, or refuse it whole
        (:class:`LedgerRefused`, listing every problem; nothing written). Every history is
        checked against its chain (under the key of the office that wrote it) and replayed
        against the rules of its workflow versions."""
        return self._ledger.import_(inp)

    def rekey(self) -> RekeyResult:
        """Re-key every case's history under the current key and seal its row: once after
        upgrading a database written before keyed histories, or after rotating the key
        (``casework keys rotate``). A case whose history does not verify, or whose row
        disagrees with it, is left as it is and listed."""
        with self._storage.errors():
            return rekey(self._storage.store)

    # -- life --------------------------------------------------------------
    def close(self) -> None:
        """Stop the scheduler and the notice deliverer if they run, and release database
        connections."""
        self.stop_scheduler()
        self._outbox.stop_background()
        self._storage.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
