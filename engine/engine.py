"""The Engine: the command pipeline and the public entry point for hosts.

A command (open, fire a trigger, record an activity) runs as one database
transaction: lock the case, check the idempotency key, check roles, input,
required fields and guard through the compiled machine, compute the new
data, chain the event, write case and event together with a row-version
check. A refused command raises before anything is written. Subscribers
hear about it after commit.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

from loguru import logger
from sqlalchemy.exc import SQLAlchemyError
from uuid6 import uuid7

from .clock import Clock, SystemClock, from_db, to_db
from .errors import (
    CaseNotFound,
    CaseworkError,
    CommandRefused,
    ConflictError,
    GuardRefused,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidTrigger,
    MissingFields,
    RoleRefused,
    StoreError,
    UnknownWorkflow,
    WrongState,
)
from .events import (
    OUTBOX_NOTICES,
    ActivityRecorded,
    CaseOpened,
    Notice,
    ReportReady,
    Subscribers,
    TransitionApplied,
)
from .expressions import ExpressionError
from .loader import LoadedDefinition, load_definitions, parse_definition
from .log import case_logger
from .machine import (
    Attempt,
    CompiledActivity,
    CompiledWorkflow,
    NamedAction,
    NamedGuard,
    TimingOptions,
)
from .migration import MigrationResult, migrate_cases
from .persistence import (
    CaseRecord,
    DatabaseUnavailable,
    DuplicateKey,
    EventRecord,
    StaleVersion,
    Store,
    TimerRecord,
)
from .persistence.ledger import ImportResult
from .persistence.migrate import SchemaMismatch
from .persistence.tx import ReadTx, WriteTx
from .reports import Report, build_report
from .scheduler import RunResult, SchedulerService, ensure_cron_timers, run_due
from .settings import Settings, load_settings
from .timers import SensitivePeriod, TimerPlan, instants
from .types import Actor, Case, Event, EventKind, GuardContext, TriggerOption
from .workflow import Workflow

ActorLike = Actor | str


# How long a process may take to hand claimed notices to its subscribers before another
# process may deliver them again.
NOTICE_LEASE = timedelta(seconds=60)


class Engine:
    """Runs workflows over durable cases. Safe to share between threads."""

    def __init__(self, database_url: str = "sqlite:///casework.db",
                 workflows: Iterable[str | Path | LoadedDefinition] = (), *,
                 clock: Clock | None = None, sqlite_synchronous: str = "FULL",
                 busy_timeout_ms: int = 10_000, pool_size: int = 5,
                 guards: Mapping[str, NamedGuard] | None = None,
                 actions: Mapping[str, NamedAction] | None = None,
                 functions: Mapping[str, Callable[..., Any]] | None = None,
                 calendars: Mapping[str, str] | None = None, strict_calendar: bool = False,
                 sensitive_periods: Iterable[SensitivePeriod] = (),
                 scheduler: Mapping[str, Any] | None = None,
                 retries: int = 5,
                 create_schema: bool = True) -> None:
        self.clock: Clock = clock or SystemClock()
        self._timing = TimingOptions(dict(calendars or {}), strict_calendar, tuple(sensitive_periods))
        self._scheduler_options = dict(scheduler or {})
        self._service: SchedulerService | None = None
        self._retries = retries
        self._guards = dict(guards or {})
        self._actions = dict(actions or {})
        self._functions = dict(functions or {})
        self.store = Store(database_url, sqlite_synchronous=sqlite_synchronous,
                           busy_timeout_ms=busy_timeout_ms, pool_size=pool_size)
        if create_schema:
            try:
                self.store.prepare_schema()
            except SchemaMismatch as e:
                raise StoreError(str(e)) from None
            except SQLAlchemyError as e:
                raise StoreError(f"cannot prepare the database schema: {e}") from None
        self._subscribers = Subscribers()
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], CompiledWorkflow] = {}
        self._latest: dict[str, CompiledWorkflow] = {}
        paths = [w for w in workflows if not isinstance(w, LoadedDefinition)]
        loaded = [w for w in workflows if isinstance(w, LoadedDefinition)] + load_definitions(paths)
        for d in loaded:
            self._register(d)
        ensure_cron_timers(self, self.clock.now())

    @classmethod
    def from_settings(cls, path: str | Path, **overrides: Any) -> Engine:
        """Build an engine from a TOML settings file (see ``config/casework.toml``)."""
        s: Settings = load_settings(path)
        kwargs: dict[str, Any] = {
            "sqlite_synchronous": s.database.sqlite_synchronous,
            "busy_timeout_ms": s.database.busy_timeout_ms,
            "pool_size": s.database.pool_size,
            "calendars": dict(s.calendars.workflows),
            "strict_calendar": s.calendars.strict,
            "sensitive_periods": [SensitivePeriod(p.name, p.start, p.end, p.warn_factor)
                                  for p in s.sensitive_periods],
            "scheduler": s.scheduler.model_dump(),
        }
        kwargs.update(overrides)
        url = kwargs.pop("database_url", None) or s.database_url()
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(url, s.workflow_files(), **kwargs)

    # -- workflows -------------------------------------------------------
    def _register(self, d: LoadedDefinition) -> CompiledWorkflow:
        wf = CompiledWorkflow(d, guards=self._guards, actions=self._actions,
                              functions=self._functions, timing=self._timing)
        definition = json.dumps(d.spec.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        with self._store_call(), self.store.write() as tx:
            tx.save_workflow_version(wf.name, wf.version, definition, d.source,
                                     to_db(self.clock.now()))
        with self._lock:
            self._versions[(wf.name, wf.version)] = wf
            self._latest[wf.name] = wf
        return wf

    def workflow(self, name: str, version: str | None = None) -> Workflow:
        """Workflow ``name`` as loaded (its newest version unless one is named)."""
        return self._compiled(name, version).describe()

    def _compiled(self, name: str, version: str | None = None) -> CompiledWorkflow:
        """The compiled workflow ``name`` (its newest loaded version unless one is named)."""
        if version is None:
            try:
                return self._latest[name]
            except KeyError:
                raise UnknownWorkflow(f"no workflow {name!r} is loaded "
                                      f"(loaded: {sorted(self._latest)})") from None
        wf = self._versions.get((name, version))
        if wf is not None:
            return wf
        with self.store.read() as tx:
            text = tx.workflow_definition(name, version)
        if text is None:
            raise UnknownWorkflow(f"workflow {name!r} has no stored version {version!r}")
        d = parse_definition(text, f"<stored {name}@{version}>")  # JSON is YAML
        wf = CompiledWorkflow(d, guards=self._guards, actions=self._actions,
                              functions=self._functions, timing=self._timing)
        with self._lock:
            self._versions[(name, version)] = wf
        return wf

    @property
    def workflows(self) -> dict[str, Workflow]:
        """The newest loaded version of each workflow, by name."""
        return {n: wf.describe() for n, wf in self._latest.items()}

    # -- subscribers -----------------------------------------------------
    def on(self, name: str, fn: Callable[[Any], None]) -> None:
        """Call ``fn`` after each committed ``name`` notice (``transition``, ``opened``, ``*``...)."""
        self._subscribers.add(name, fn)

    # -- commands --------------------------------------------------------
    def open_case(self, workflow: str, data: Mapping[str, Any] | None = None, *,
                  actor: ActorLike, case_id: str | None = None,
                  idempotency_key: str | None = None) -> Case:
        """Open a case of ``workflow`` in its initial state, with ``data``."""
        wf = self._compiled(workflow)
        who = _actor(actor)
        _check_key(idempotency_key)
        data = dict(data or {})
        now = self.clock.now()
        log = case_logger(case_id, wf.name, data, wf.pii)
        if wf.open_roles and not (wf.open_roles & who.roles):
            raise RoleRefused(f"opening a {wf.name!r} case needs one of the roles "
                              f"{sorted(wf.open_roles)}", trigger="open")
        values = self._validated(wf.validate, data, None, wf.initial, "open")
        missing = [f for f in wf.spec.open.required if values.get(f) in (None, "", [])]
        if missing:
            raise MissingFields(f"missing required input: {', '.join(missing)}", trigger="open")
        names = wf.names_for({}, values, who, now.isoformat(), wf.initial)
        try:
            values.update(wf.evaluate_sets(wf.open_sets, names))
        except CommandRefused as e:
            raise type(e)(e.reason, trigger="open") from None
        values = self._validated(wf.validate, values, None, wf.initial, "open")
        cid = case_id or uuid7().hex  # time-ordered: new cases sit together in the indexes
        at = to_db(now)
        role = _role_used(who, wf.open_roles)

        def write(tx: WriteTx) -> tuple[Case, EventRecord, type[Notice] | None]:
            # A fresh record on every attempt: a retried attempt starts the chain anew.
            rec = CaseRecord(cid, wf.name, wf.version, wf.initial, wf.is_final(wf.initial),
                             values, 0, at, at, 1, 0, "")
            if idempotency_key is not None:
                prior = tx.event_by_key(idempotency_key)
                if prior is not None:
                    return self._replay(tx, prior, None, "open"), prior, None
            if tx.get_case(cid) is not None:
                raise InvalidInput(f"a case with id {cid!r} already exists", case_id=cid)
            rec.clocks = {}
            details: dict[str, Any] = {}
            flagged = self._assess_risk(tx, wf, rec) if wf.risk_rules else []
            if flagged:
                details["flagged_at_risk"] = flagged
            plan = self._plan_timing(wf, rec, None, "open", values, now)
            if plan is not None:
                details.update(plan.notes)
            ev = tx.chain_event(rec, kind="open", name="open", from_state=None,
                                to_state=wf.initial, actor=who.id, role=role, at=at,
                                changes=values, details=details, idempotency_key=idempotency_key)
            tx.insert_case(rec)
            self._write_plan(tx, rec.id, plan, now)
            tx.insert_event(ev)
            if flagged:
                tx.add_outbox("flagged", at, case_id=rec.id, seq=ev.seq)
            log.bind(case_id=cid).info("opened {} case in {} by {}", wf.name, wf.initial, who.id)
            return _to_case(rec), ev, CaseOpened

        return self._command(write, idempotency_key)

    def fire(self, case_id: str, trigger: str, *, actor: ActorLike,
             data: Mapping[str, Any] | None = None, expected_version: int | None = None,
             idempotency_key: str | None = None) -> Case:
        """Fire ``trigger`` (a transition or an activity) on a case; return the case after it."""
        who = _actor(actor)
        _check_key(idempotency_key)
        values = dict(data or {})
        return self._command(
            lambda tx: self._fire_in(tx, case_id, trigger, who, values, expected_version,
                                     idempotency_key),
            idempotency_key)

    def _command(self, write: Callable[[WriteTx], tuple[Case, EventRecord, type[Notice] | None]],
                 key: str | None) -> Case:
        """Run one command in one write transaction, then tell subscribers.

        If a concurrent command with the same idempotency key committed first, the unique
        key refuses this one; it is run once more, and then replays the first result. A
        command with an idempotency key that fails because the database was unavailable
        (locked past the busy timeout, a lost connection) is retried up to ``retries`` times
        with a growing pause: the key makes the retry safe, whether or not the first try
        committed. Without a key the error is raised; nothing is retried blindly.
        """
        attempts = 1 + (self._retries if key is not None else 0)
        for attempt in range(1, attempts + 1):
            try:
                with _StoreErrors(retrying=True), self.store.write() as tx:
                    case, ev, notice_cls = write(tx)
                    outbox = tx.outbox_written
                break
            except DuplicateKey:
                if key is None or attempt == attempts:
                    raise
            except DatabaseUnavailable as e:
                if attempt == attempts:
                    tries = f" after {attempts} tries" if attempts > 1 else ""
                    raise StoreError(f"{e}{tries}") from None
                time.sleep(min(0.1 * 2 ** attempt, 2.0))  # ~6 s in all: a server restart
        if notice_cls is not None and self._subscribers.wants(notice_cls.name):
            self._subscribers.publish(notice_cls(case, _to_event(ev)))
        if outbox:
            try:
                self.deliver_notices()
            except CaseworkError:  # the command is committed; the scheduler delivers later
                logger.bind(case_id=case.id, workflow=case.workflow).opt(exception=False).warning(
                    "notices not delivered yet; the next scheduler run delivers them")
        return case

    def _fire_in(self, tx: WriteTx, case_id: str, trigger: str, who: Actor,
                 data: dict[str, Any], expected_version: int | None,
                 key: str | None) -> tuple[Case, EventRecord, type[Notice] | None]:
        rec = tx.lock_case(case_id)
        if rec is None:
            raise CaseNotFound(case_id)
        if key is not None:
            prior = tx.event_by_key(key)
            if prior is not None:
                return self._replay(tx, prior, case_id, trigger), prior, None
        if expected_version is not None and rec.row_version != expected_version:
            raise ConflictError(case_id, expected_version, rec.row_version)
        wf = self._compiled(rec.workflow, rec.version)
        log = case_logger(case_id, wf.name, rec.data, wf.pii)
        now = self.clock.now()
        now_iso = now.isoformat()
        state = rec.state
        activity = wf.activities.get(trigger)
        try:
            if activity is not None:
                changes, details, new_state, role = self._check_activity(
                    wf, activity, rec, who, data, now, now_iso)
                kind = "activity"
                notice_cls: type[Notice] = ActivityRecorded
            else:
                changes, new_state, role = self._check_transition(
                    wf, rec, trigger, who, data, now, now_iso)
                details = {}
                kind = "transition"
                notice_cls = TransitionApplied
        except CommandRefused as e:
            refused = type(e)(e.reason, case_id=case_id, state=state, trigger=trigger)
            log.info("refused {} by {}: {}", trigger, who.id, e.reason)
            raise refused from None
        at = to_db(now)
        old_version = rec.row_version
        rec.state = new_state
        rec.final = wf.is_final(new_state)
        if rec.final:
            rec.closed_at = to_db(now)
        rec.data = {**rec.data, **changes}
        rec.row_version = old_version + 1
        rec.updated_at = at
        plan = self._plan_timing(wf, rec, state, trigger, changes, now) if kind == "transition" else None
        if plan is not None:
            details.update(plan.notes)
        flagged = (self._assess_risk(tx, wf, rec)
                   if wf.risk_rules and not rec.at_risk and wf.risk_fields.intersection(changes)
                   else [])
        if flagged:
            details["flagged_at_risk"] = flagged
        ev = tx.chain_event(rec, kind=kind, name=trigger, from_state=state, to_state=new_state,
                            actor=who.id, role=role, at=at, changes=changes, details=details,
                            idempotency_key=key)
        tx.update_case(rec, old_version)
        self._write_plan(tx, rec.id, plan, now)
        tx.insert_event(ev)
        if flagged:
            tx.add_outbox("flagged", at, case_id=rec.id, seq=ev.seq)
        log.info("{} {}: {} -> {} by {}", kind, trigger, state, new_state, who.id)
        return _to_case(rec), ev, notice_cls

    @staticmethod
    def _plan_timing(wf: CompiledWorkflow, rec: CaseRecord, old_state: str | None, trigger: str,
                     changes: dict[str, Any], now: datetime) -> TimerPlan | None:
        """Move the case's SLA clocks with the command (in memory); the timers to change."""
        if not wf.timing.active:
            return None
        plan = wf.timing.on_command(rec.clocks, case_id=rec.id, old_state=old_state,
                                    new_state=rec.state, trigger=trigger, changes=changes, now=now)
        if rec.overdue_since is not None and not any(
                c.get("breaches") and c["status"] != "stopped" for c in rec.clocks.values()):
            rec.overdue_since = None
        return plan

    @staticmethod
    def _write_plan(tx: WriteTx, case_id: str, plan: TimerPlan | None, now: datetime) -> None:
        """Cancel and create the case's timers in the command's transaction."""
        if not plan:
            return
        if plan.cancel:
            tx.cancel_timers(case_id, sorted(plan.cancel))
        if plan.insert:
            for t in plan.insert:
                t.due_at = to_db(t.due_at)
            tx.insert_timers(plan.insert, to_db(now))

    def _assess_risk(self, tx: WriteTx, wf: CompiledWorkflow, rec: CaseRecord) -> list[str]:
        """Early warning: flag the case at risk when one of the workflow's rules holds."""
        if rec.at_risk or rec.final:
            return []
        names: dict[str, Any] = dict.fromkeys(wf.fields)
        names.update(rec.data)
        if wf.risk_identity is not None and rec.data.get(wf.risk_identity):
            rec.party_key = hashlib.sha256(
                f"{wf.name}\x1f{rec.data[wf.risk_identity]}".encode()).hexdigest()
        others, others_open = 0, 0
        if wf.risk_needs_party and rec.party_key is not None:
            others, others_open = tx.party_counts(wf.name, rec.party_key, rec.id)
        names["other_cases"], names["other_open_cases"] = others, others_open
        hits = []
        for name, rule in wf.risk_rules.items():
            try:
                if rule.evaluate(names):
                    hits.append(name)
            except ExpressionError:
                continue
        if hits:
            rec.at_risk = True
        return hits

    def _check_transition(self, wf: CompiledWorkflow, rec: CaseRecord, trigger: str, who: Actor,
                          data: dict[str, Any], now: datetime,
                          now_iso: str) -> tuple[dict[str, Any], str, str | None]:
        accepted = wf.inputs_by_trigger.get(trigger)
        if accepted is None:
            raise InvalidTrigger(f"workflow {wf.name!r} has no trigger or activity {trigger!r}")
        foreign = sorted(set(data) - accepted)
        if foreign:
            raise InvalidInput("; ".join(
                f"{f}: not a field of this workflow" if f not in wf.fields else
                f"{f}: not an input of {trigger!r} (it takes {', '.join(sorted(accepted)) or 'none'})"
                for f in foreign))
        values = self._validated(wf.validate, data, rec.id, rec.state, trigger)
        names = wf.names_for(rec.data, values, who, now_iso, rec.state)
        attempt = Attempt(who, values, names)
        ct, new_state = wf.resolve(rec.state, trigger, attempt,
                                   lambda: GuardContext(rec.id, wf.name, rec.state, rec.data,
                                                        values, who, now))
        computed: dict[str, Any] = wf.evaluate_sets(ct.sets, names) if ct.sets else {}
        for _name, fn in ct.actions:
            extra = fn(GuardContext(rec.id, wf.name, new_state, {**rec.data, **values, **computed},
                                    values, who, now))
            if extra:
                computed.update(extra)
        # The input was checked above; only what the definition and actions computed is checked.
        changes = {**values, **self._validated(wf.validate, computed, rec.id, rec.state, trigger)}
        return changes, new_state, _role_used(who, ct.roles)

    def _check_activity(self, wf: CompiledWorkflow, a: CompiledActivity, rec: CaseRecord,
                        who: Actor, data: dict[str, Any], now: datetime, now_iso: str
                        ) -> tuple[dict[str, Any], dict[str, Any], str, str | None]:
        if rec.state not in a.leaves:
            raise WrongState(f"activity {a.name!r} is allowed only in {sorted(a.spec.states)}")
        if a.roles and not (a.roles & who.roles):
            raise RoleRefused(f"needs one of the roles {sorted(a.roles)}; {who.id} has "
                              f"{sorted(who.roles) or 'none'}")
        details = self._validated(a.validate, data, rec.id, rec.state, a.name)
        missing = [f for f in a.spec.required if details.get(f) in (None, "", [])]
        if missing:
            raise MissingFields(f"missing required input: {', '.join(missing)}")
        names = wf.names_for(rec.data, details, who, now_iso, rec.state)
        names.update({f: None for f in a.spec.fields})
        names.update(details)
        if a.guard is not None:
            try:
                ok = a.guard.evaluate(names)
            except ExpressionError as e:
                raise GuardRefused(f"guard could not be evaluated: {e}") from None
            if not ok:
                part = a.guard.failing_part(names)
                why = f" (`{part}` does not hold)" if part else ""
                raise GuardRefused(f"guard `{a.guard.source}` is false{why}")
        changes = wf.evaluate_sets(a.sets, names) if a.sets else {}
        if changes:
            changes = self._validated(wf.validate, changes, rec.id, rec.state, a.name)
        return changes, details, rec.state, _role_used(who, a.roles)

    @staticmethod
    def _validated(validate: Callable[[Mapping[str, Any]], dict[str, Any]],
                   data: Mapping[str, Any], case_id: str | None, state: str,
                   trigger: str) -> dict[str, Any]:
        try:
            return validate(data)
        except InvalidInput as e:
            raise InvalidInput(e.reason, case_id=case_id, state=state, trigger=trigger) from None

    def _replay(self, tx: WriteTx, prior: EventRecord, case_id: str | None, name: str) -> Case:
        """The result of an already applied command, rebuilt from the history up to its event."""
        if (case_id is not None and prior.case_id != case_id) or prior.name != name:
            raise IdempotencyKeyReused(
                f"idempotency key {prior.idempotency_key!r} was used for {prior.name!r} on case "
                f"{prior.case_id}, not for {name!r} on case {case_id or '(new)'}")
        rec = tx.get_case(prior.case_id)
        assert rec is not None
        data: dict[str, Any] = {}
        state = rec.state
        for ev in tx.history(prior.case_id):
            if ev.seq > prior.seq:
                break
            data.update(ev.changes)
            state = ev.to_state or state
        wf = self._compiled(rec.workflow, rec.version)
        return Case(rec.id, rec.workflow, rec.version, state, data, prior.seq,
                    rec.escalation_level, from_db(rec.opened_at), from_db(prior.at),
                    wf.is_final(state))

    # -- queries ---------------------------------------------------------
    def get_case(self, case_id: str) -> Case:
        """The case as stored now."""
        with self._store_call(), self.store.read() as tx:
            rec = tx.get_case(case_id)
        if rec is None:
            raise CaseNotFound(case_id)
        return _to_case(rec)

    def history(self, case_id: str) -> list[Event]:
        """The case's events, oldest first."""
        with self._store_call(), self.store.read() as tx:
            if tx.get_case(case_id) is None:
                raise CaseNotFound(case_id)
            return [_to_event(e) for e in tx.history(case_id)]

    def available_triggers(self, case_id: str, actor: ActorLike) -> list[TriggerOption]:
        """What ``actor`` may do on the case now, and for each refused option, why not.

        Guards that read input the command has not given yet are not judged here; such
        options are listed as allowed with the input they require.
        """
        who = Actor.parse(actor)
        case = self.get_case(case_id)
        wf = self._compiled(case.workflow, case.version)
        now = self.clock.now()
        out: list[TriggerOption] = []
        for trigger in wf.triggers_from(case.state):
            names = wf.names_for(dict(case.data), {}, who, now.isoformat(), case.state)
            attempt = Attempt(who, {}, names, check_required=False)
            needs: tuple[str, ...] = ()
            try:
                wf.resolve(case.state, trigger, attempt,
                           lambda: GuardContext(case.id, wf.name, case.state, case.data, {}, who, now))
                ct = attempt.chosen
                needs = ct.spec.required if ct else ()
                out.append(TriggerOption(trigger, "transition", True, None, needs))
            except CommandRefused as e:
                reqs = tuple(dict.fromkeys(
                    f for t in wf.transitions if t.spec.trigger == trigger for f in t.spec.required))
                guards_on_input = isinstance(e, GuardRefused) and any(
                    t.guard is not None and t.guard.names & set(t.spec.required)
                    for t in wf.transitions if t.spec.trigger == trigger)
                if guards_on_input:
                    out.append(TriggerOption(trigger, "transition", True,
                                             "the guard is checked against the input", reqs))
                else:
                    out.append(TriggerOption(trigger, "transition", False,
                                             f"[{e.rule}] {e.reason}", reqs))
        for a in wf.activities_in(case.state):
            if a.roles and not (a.roles & who.roles):
                out.append(TriggerOption(a.name, "activity", False,
                                         f"[role] needs one of the roles {sorted(a.roles)}",
                                         a.spec.required))
            else:
                out.append(TriggerOption(a.name, "activity", True, None, a.spec.required))
        return out

    # -- the scheduler ---------------------------------------------------
    def run_due(self, now: datetime | None = None, **options: Any) -> RunResult:
        """Fire every timer due at ``now`` (the clock's time by default), each exactly once.

        Options: ``batch_size``, ``owner``, ``lease`` (timedelta), ``limit``.
        """
        opts = {"batch_size": self._scheduler_options.get("batch_size", 200),
                "lease": timedelta(seconds=self._scheduler_options.get("lease_seconds", 60))}
        opts.update(options)
        return run_due(self, now or self.clock.now(), **opts)

    def start_scheduler(self, **options: Any) -> SchedulerService:
        """Run the scheduler in the background (APScheduler): the sweep and the cron cycles."""
        if self._service is None:
            opts = {k: v for k, v in self._scheduler_options.items()
                    if k in {"interval_seconds", "batch_size", "lease_seconds"}}
            opts.update(options)
            self._service = SchedulerService(self, **opts)
        self._service.start()
        return self._service

    def stop_scheduler(self, wait: bool = True) -> None:
        """Stop the background scheduler; the batch in hand is finished first."""
        if self._service is not None:
            self._service.stop(wait=wait)

    def deliver_notices(self, limit: int = 500) -> int:
        """Hand the outbox's undelivered notices to this engine's subscribers; how many.

        The notices are claimed first (like due timers), so when several processes deliver,
        each notice goes to one of them. Delivery is at least once: a notice claimed by a
        process that dies before marking it delivered goes out again after its lease
        (``NOTICE_LEASE``).
        """
        from .scheduler import default_owner

        delivered = 0
        owner = default_owner()
        while True:
            now = to_db(self.clock.now())
            with self._store_call(), self.store.read() as rtx:
                if not rtx.pending_outbox(now, 1):
                    return delivered  # nothing to do: no write lock taken
            with self._store_call(), self.store.write() as tx:
                claimed = tx.claim_outbox(now, owner, now + NOTICE_LEASE, limit)
            if not claimed:
                return delivered  # other processes hold what is pending
            notices: list[tuple[int, Notice | ReportReady | None]] = []
            with self._store_call(), self.store.read() as rtx:
                for oid, name, case_id, seq, report_id in claimed:
                    wanted = self._subscribers.wants("report" if report_id else
                                                     OUTBOX_NOTICES.get(name, Notice).name)
                    notices.append((oid, self._notice_from(rtx, name, case_id, seq, report_id)
                                    if wanted else None))
            # Slow subscribers must not outlast the claim: past half the lease, what is
            # delivered is marked and the rest given back, to be claimed anew.
            started = time.monotonic()
            done: list[int] = []
            for oid, notice in notices:
                if time.monotonic() - started > NOTICE_LEASE.total_seconds() / 2:
                    break
                if notice is not None:
                    self._subscribers.publish(notice)
                done.append(oid)
            rest = [oid for oid, _ in notices[len(done):]]
            with self._store_call(), self.store.write() as tx:
                at = to_db(self.clock.now())
                for oid in done:
                    tx.mark_delivered(oid, at)
                tx.release_outbox(rest, owner)
            delivered += len(done)
            if not rest and len(claimed) < limit:
                return delivered

    def _notice_from(self, tx: ReadTx, name: str, case_id: str | None, seq: int | None,
                     report_id: int | None) -> Notice | ReportReady | None:
        if report_id is not None:
            got = tx.report(report_id)
            if got is None:
                return None
            rid, workflow, report, at, payload = got
            return ReportReady(rid, workflow, report, from_db(at), payload)
        if case_id is None or seq is None:
            return None
        rec = tx.get_case(case_id)
        ev = tx.event_at(case_id, seq)
        if rec is None or ev is None:
            return None
        return OUTBOX_NOTICES.get(name, Notice)(_to_case(rec), _to_event(ev))

    def recompute_deadlines(self, *, provisional_only: bool = True) -> int:
        """Reschedule running deadlines (e.g. after the holiday package learnt a new year).

        Each case is rescheduled in its own transaction with a ``recomputed`` event; returns
        how many cases changed.
        """
        with self._store_call(), self.store.read() as rtx:
            ids = rtx.case_ids()
        changed = 0
        for cid in ids:
            with self._store_call(), self.store.write() as tx:
                rec = tx.lock_case(cid)
                if rec is None or rec.final or not rec.clocks:
                    continue
                if provisional_only and not any(c.get("provisional") for c in rec.clocks.values()):
                    continue
                wf = self._compiled(rec.workflow, rec.version)
                now = self.clock.now()
                plan = wf.timing.recompute(rec.clocks, case_id=rec.id, now=now)
                if not plan:
                    continue
                old = rec.row_version
                rec.row_version += 1
                rec.updated_at = to_db(now)
                ev = tx.chain_event(rec, kind="deadline", name="recomputed", from_state=rec.state,
                                    to_state=rec.state, actor="scheduler", role="system",
                                    at=to_db(now), changes={},
                                    details={"deadlines": sorted(plan.cancel), **plan.notes},
                                    idempotency_key=None)
                tx.update_case(rec, old)
                self._write_plan(tx, rec.id, plan, now)
                tx.insert_event(ev)
                changed += 1
        return changed

    def report(self, workflow: str, *, start: date | datetime | str | None = None,
               end: date | datetime | str | None = None, by: str | None = None,
               where: Mapping[str, Any] | None = None) -> Report:
        """The figures ``workflow`` declares for ``[start, end)``, computed by SQL.

        ``by`` breaks them down by a case field (``unit``, ``source``...); ``where`` keeps
        the cases whose fields match (a value, a list, or a declared group's name).
        """
        try:
            return build_report(self, workflow, start=start, end=end, by=by, where=where)
        except (DatabaseUnavailable, SQLAlchemyError) as e:
            raise StoreError(f"the report could not be read: {e}") from None

    def migrate(self, workflow: str, to_version: str, mapping: Mapping[str, str] | None = None, *,
                dry_run: bool = True, actor: str = "operator") -> MigrationResult:
        """Move ``workflow``'s open cases to ``to_version`` (a dry run unless told otherwise).

        ``to_version`` is a stored version or ``"latest"`` (the loaded definition).
        """
        if to_version == "latest":
            to_version = self._compiled(workflow).version
        return migrate_cases(self, workflow, to_version, mapping or {}, dry_run=dry_run, actor=actor)

    def workflow_versions(self, workflow: str) -> list[str]:
        """The versions of ``workflow`` stored in the database, oldest first."""
        with self._store_call(), self.store.read() as tx:
            return tx.workflow_version_list(workflow)

    def state_counts(self, workflow: str) -> dict[str, tuple[int, int]]:
        """Open and overdue cases of ``workflow`` per state: {state: (open, overdue)}."""
        with self._store_call(), self.store.read() as tx:
            return {s: (n, o) for s, n, o in tx.open_by_state(workflow)}

    def pending_timers(self, case_id: str) -> list[TimerRecord]:
        """The case's timer instants that have not fired yet, soonest first.

        A deadline's warnings and breach are stored as one chained row (see
        :func:`engine.timers.chained`); each of its instants is listed here on its own,
        with the row's id."""
        with self._store_call(), self.store.read() as tx:
            rows = tx.pending_timers(case_id)
        out = [i for t in rows for i in instants(t)]
        out.sort(key=lambda r: (r.due_at, r.id))
        return out

    def verify(self, case_id: str | None = None) -> list[str]:
        """Problems in the hash chains of one case or of every case (empty when intact)."""
        with self._store_call(), self.store.read() as tx:
            if case_id is not None:
                return tx.verify_case(case_id)
            return [p for _, found in tx.verify_all() for p in found]

    def close(self) -> None:
        """Stop the scheduler if it runs, and release database connections."""
        self.stop_scheduler()
        self.store.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _store_call() -> _StoreErrors:
        return _StoreErrors()

    # -- the ledger: whole cases out of one database and into another ------------------
    # (persistence.ledger does the work; these wrappers give it the engine's clock and errors)
    def export_cases(self, out: TextIO, *, workflow: str | None = None, unit: str | None = None,
                     case_ids: Iterable[str] | None = None) -> int:
        """Write the ledger (JSON lines) of the chosen cases to ``out``; how many cases.

        ``unit`` keeps the cases whose data field ``unit`` has that value.
        """
        from .persistence.ledger import export_cases

        try:
            with self._store_call():
                return export_cases(self.store, out, workflow=workflow, unit=unit,
                                    case_ids=case_ids, now=to_db(self.clock.now()))
        except LookupError as e:
            raise CaseNotFound(str(e.args[0])) from None

    def import_cases(self, inp: TextIO) -> ImportResult:
        """Import a ledger whole, in one transaction, or refuse it whole
        (:class:`persistence.errors.LedgerError`, listing every problem; nothing written)."""
        from .persistence.ledger import import_cases

        with self._store_call():
            return import_cases(self.store, inp, now=to_db(self.clock.now()))

    def stored_counts(self) -> tuple[int, int]:
        """How many cases and events the database holds."""
        with self._store_call(), self.store.read() as tx:
            return tx.count_cases(), int(tx.fetch(self.store.sql.ledger.count_events, {})[0][0])


class _StoreErrors:
    """Turns the storage layer's errors into the engine's (``retrying``: leave
    ``DatabaseUnavailable`` to :meth:`Engine._command`, which may retry)."""

    def __init__(self, retrying: bool = False) -> None:
        self.retrying = retrying

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> Literal[False]:
        if isinstance(exc, StaleVersion):
            raise ConflictError(exc.case_id, exc.expected, exc.actual) from None
        if isinstance(exc, DatabaseUnavailable) and not self.retrying:
            raise StoreError(str(exc)) from None
        return False


def _actor(actor: ActorLike) -> Actor:
    try:
        return Actor.parse(actor)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


def _check_key(key: str | None) -> None:
    """Keys starting ``timer:`` or ``cron:`` belong to the scheduler."""
    if key is not None and key.startswith(("timer:", "cron:")):
        raise InvalidInput(f"idempotency key {key!r}: keys starting 'timer:' or 'cron:' are "
                           "the scheduler's")


def _role_used(who: Actor, allowed: frozenset[str]) -> str | None:
    if allowed:
        return min(who.roles & allowed) if who.roles & allowed else None
    return min(who.roles) if who.roles else None


def _to_case(rec: CaseRecord) -> Case:
    return Case(rec.id, rec.workflow, rec.version, rec.state, rec.data, rec.row_version,
                rec.escalation_level, from_db(rec.opened_at), from_db(rec.updated_at), rec.final,
                rec.at_risk, from_db(rec.overdue_since) if rec.overdue_since else None,
                rec.clocks)


def _to_event(e: EventRecord) -> Event:
    return Event(e.case_id, e.seq, EventKind(e.kind), e.name, e.from_state, e.to_state, e.actor, e.role,
                 from_db(e.at), e.changes, e.details, e.idempotency_key, e.hash)

