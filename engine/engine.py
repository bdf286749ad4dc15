"""The Engine: the command pipeline and the public entry point for hosts.

A command (open, fire a trigger, record an activity) runs as one database
transaction: lock the case, check the idempotency key, check roles, input,
required fields and guard through the compiled machine, compute the new
data, chain the event, write case and event together with a row-version
check. A refused command raises before anything is written. Subscribers
hear about it after commit.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from persistence import (
    CaseRecord,
    DatabaseUnavailable,
    DuplicateKey,
    EventRecord,
    StaleVersion,
    Store,
)
from persistence.store import WriteTx

from .clock import Clock, SystemClock, from_db, to_db
from .errors import (
    CaseNotFound,
    CommandRefused,
    ConflictError,
    GuardRefused,
    IdempotencyKeyReused,
    InvalidInput,
    MissingFields,
    RoleRefused,
    StoreError,
    UnknownWorkflow,
    WrongState,
)
from .events import ActivityRecorded, CaseOpened, Notice, Subscribers, TransitionApplied
from .expressions import ExpressionError
from .loader import LoadedDefinition, load_definitions, parse_definition
from .log import case_logger
from .machine import Attempt, CompiledActivity, CompiledWorkflow, NamedAction, NamedGuard
from .settings import Settings, load_settings
from .types import Actor, Case, Event, GuardContext, TriggerOption

ActorLike = Actor | str


class Engine:
    """Runs workflows over durable cases. Safe to share between threads."""

    def __init__(self, database_url: str = "sqlite:///casework.db",
                 workflows: Iterable[str | Path | LoadedDefinition] = (), *,
                 clock: Clock | None = None, sqlite_synchronous: str = "FULL",
                 busy_timeout_ms: int = 10_000, pool_size: int = 5,
                 guards: Mapping[str, NamedGuard] | None = None,
                 actions: Mapping[str, NamedAction] | None = None,
                 functions: Mapping[str, Callable[..., Any]] | None = None,
                 create_schema: bool = True) -> None:
        self.clock: Clock = clock or SystemClock()
        self._guards = dict(guards or {})
        self._actions = dict(actions or {})
        self._functions = dict(functions or {})
        self.store = Store(database_url, sqlite_synchronous=sqlite_synchronous,
                           busy_timeout_ms=busy_timeout_ms, pool_size=pool_size)
        if create_schema:
            self.store.create_schema()
        self._subscribers = Subscribers()
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], CompiledWorkflow] = {}
        self._latest: dict[str, CompiledWorkflow] = {}
        paths = [w for w in workflows if not isinstance(w, LoadedDefinition)]
        loaded = [w for w in workflows if isinstance(w, LoadedDefinition)] + load_definitions(paths)
        for d in loaded:
            self._register(d)

    @classmethod
    def from_settings(cls, path: str | Path, **overrides: Any) -> Engine:
        """Build an engine from a TOML settings file (see ``config/casework.toml``)."""
        s: Settings = load_settings(path)
        kwargs: dict[str, Any] = {
            "sqlite_synchronous": s.database.sqlite_synchronous,
            "busy_timeout_ms": s.database.busy_timeout_ms,
            "pool_size": s.database.pool_size,
        }
        kwargs.update(overrides)
        url = kwargs.pop("database_url", None) or s.database_url()
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(url, s.workflow_files(), **kwargs)

    # -- workflows -------------------------------------------------------
    def _register(self, d: LoadedDefinition) -> CompiledWorkflow:
        wf = CompiledWorkflow(d, guards=self._guards, actions=self._actions,
                              functions=self._functions)
        definition = json.dumps(d.spec.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        with self._store_call(), self.store.write() as tx:
            tx.save_workflow_version(wf.name, wf.version, definition, d.source,
                                     to_db(self.clock.now()))
        with self._lock:
            self._versions[(wf.name, wf.version)] = wf
            self._latest[wf.name] = wf
        return wf

    def workflow(self, name: str, version: str | None = None) -> CompiledWorkflow:
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
                              functions=self._functions)
        with self._lock:
            self._versions[(name, version)] = wf
        return wf

    @property
    def workflows(self) -> dict[str, CompiledWorkflow]:
        return dict(self._latest)

    # -- subscribers -----------------------------------------------------
    def on(self, name: str, fn: Callable[[Any], None]) -> None:
        """Call ``fn`` after each committed ``name`` notice (``transition``, ``opened``, ``*``...)."""
        self._subscribers.add(name, fn)

    # -- commands --------------------------------------------------------
    def open_case(self, workflow: str, data: Mapping[str, Any] | None = None, *,
                  actor: ActorLike, case_id: str | None = None,
                  idempotency_key: str | None = None) -> Case:
        """Open a case of ``workflow`` in its initial state, with ``data``."""
        wf = self.workflow(workflow)
        who = Actor.parse(actor)
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
        cid = case_id or uuid.uuid4().hex
        at = to_db(now)
        rec = CaseRecord(cid, wf.name, wf.version, wf.initial, wf.is_final(wf.initial), values, 0,
                         at, at, 1, 0, "")
        role = _role_used(who, wf.open_roles)

        def write(tx: WriteTx) -> tuple[Case, EventRecord, type[Notice] | None]:
            if idempotency_key is not None:
                prior = tx.event_by_key(idempotency_key)
                if prior is not None:
                    return self._replay(tx, prior, None, "open"), prior, None
            if tx.get_case(cid) is not None:
                raise InvalidInput(f"a case with id {cid!r} already exists", case_id=cid)
            ev = tx.chain_event(rec, kind="open", name="open", from_state=None,
                                to_state=wf.initial, actor=who.id, role=role, at=at,
                                changes=values, details={}, idempotency_key=idempotency_key)
            tx.insert_case(rec)
            tx.insert_event(ev)
            log.bind(case_id=cid).info("opened {} case in {} by {}", wf.name, wf.initial, who.id)
            return _to_case(rec), ev, CaseOpened

        return self._command(write, idempotency_key)

    def fire(self, case_id: str, trigger: str, *, actor: ActorLike,
             data: Mapping[str, Any] | None = None, expected_version: int | None = None,
             idempotency_key: str | None = None) -> Case:
        """Fire ``trigger`` (a transition or an activity) on a case; return the case after it."""
        who = Actor.parse(actor)
        values = dict(data or {})
        return self._command(
            lambda tx: self._fire_in(tx, case_id, trigger, who, values, expected_version,
                                     idempotency_key),
            idempotency_key)

    def _command(self, write: Callable[[WriteTx], tuple[Case, EventRecord, type[Notice] | None]],
                 key: str | None) -> Case:
        """Run one command in one write transaction, then tell subscribers.

        If a concurrent command with the same idempotency key committed first, the unique
        key refuses this one; it is run once more, and then replays the first result.
        """
        try:
            with self._store_call(), self.store.write() as tx:
                case, ev, notice_cls = write(tx)
        except DuplicateKey:
            if key is None:
                raise
            with self._store_call(), self.store.write() as tx:
                case, ev, notice_cls = write(tx)
        if notice_cls is not None:
            self._subscribers.publish(notice_cls(case, _to_event(ev)))
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
        wf = self.workflow(rec.workflow, rec.version)
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
            e.case_id, e.state, e.trigger = case_id, state, trigger
            refused = type(e)(e.reason, case_id=case_id, state=state, trigger=trigger)
            log.info("refused {} by {}: {}", trigger, who.id, e.reason)
            raise refused from None
        at = to_db(now)
        old_version = rec.row_version
        rec.state = new_state
        rec.final = wf.is_final(new_state)
        rec.data = {**rec.data, **changes}
        rec.row_version = old_version + 1
        rec.updated_at = at
        ev = tx.chain_event(rec, kind=kind, name=trigger, from_state=state, to_state=new_state,
                            actor=who.id, role=role, at=at, changes=changes, details=details,
                            idempotency_key=key)
        tx.update_case(rec, old_version)
        tx.insert_event(ev)
        log.info("{} {}: {} -> {} by {}", kind, trigger, state, new_state, who.id)
        return _to_case(rec), ev, notice_cls

    def _check_transition(self, wf: CompiledWorkflow, rec: CaseRecord, trigger: str, who: Actor,
                          data: dict[str, Any], now: datetime,
                          now_iso: str) -> tuple[dict[str, Any], str, str | None]:
        values = self._validated(wf.validate, data, rec.id, rec.state, trigger)
        names = wf.names_for(rec.data, values, who, now_iso, rec.state)
        attempt = Attempt(who, values, names)
        ct, new_state = wf.resolve(rec.state, trigger, attempt,
                                   lambda: GuardContext(rec.id, wf.name, rec.state, rec.data,
                                                        values, who, now))
        changes = dict(values)
        if ct.sets:
            changes.update(wf.evaluate_sets(ct.sets, names))
        for _name, fn in ct.actions:
            extra = fn(GuardContext(rec.id, wf.name, new_state, {**rec.data, **changes}, values,
                                    who, now))
            if extra:
                changes.update(extra)
        if ct.sets or ct.actions:
            changes = self._validated(wf.validate, changes, rec.id, rec.state, trigger)
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
        names = wf.names_for(rec.data, {}, who, now_iso, rec.state)
        names.update({f: None for f in a.spec.fields})
        names.update(details)
        if a.guard is not None:
            try:
                ok = a.guard.evaluate(names)
            except ExpressionError as e:
                raise GuardRefused(f"guard could not be evaluated: {e}") from None
            if not ok:
                raise GuardRefused(f"guard `{a.guard.source}` is false")
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
        wf = self.workflow(rec.workflow, rec.version)
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
        wf = self.workflow(case.workflow, case.version)
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

    def verify(self, case_id: str | None = None) -> list[str]:
        """Problems in the hash chains of one case or of every case (empty when intact)."""
        with self._store_call(), self.store.read() as tx:
            ids = [case_id] if case_id is not None else tx.case_ids()
            problems: list[str] = []
            for cid in ids:
                problems.extend(tx.verify_case(cid))
        return problems

    def close(self) -> None:
        """Release database connections."""
        self.store.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _store_call() -> _StoreErrors:
        return _StoreErrors()


class _StoreErrors:
    """Turns the storage layer's errors into the engine's."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> Literal[False]:
        if isinstance(exc, StaleVersion):
            raise ConflictError(exc.case_id, exc.expected, exc.actual) from None
        if isinstance(exc, DatabaseUnavailable):
            raise StoreError(str(exc)) from None
        return False


def _role_used(who: Actor, allowed: frozenset[str]) -> str | None:
    if allowed:
        return min(who.roles & allowed) if who.roles & allowed else None
    return min(who.roles) if who.roles else None


def _to_case(rec: CaseRecord) -> Case:
    return Case(rec.id, rec.workflow, rec.version, rec.state, rec.data, rec.row_version,
                rec.escalation_level, from_db(rec.opened_at), from_db(rec.updated_at), rec.final)


def _to_event(e: EventRecord) -> Event:
    return Event(e.case_id, e.seq, e.kind, e.name, e.from_state, e.to_state, e.actor, e.role,
                 from_db(e.at), e.changes, e.details, e.idempotency_key, e.hash)

