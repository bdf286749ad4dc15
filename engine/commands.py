"""The command pipeline: open, fire a trigger or an activity, recompute deadlines.

A command runs as one database transaction: lock the case, answer a repeated
idempotency key from the history, ask :mod:`casework.rules` for the decision, move
the case's deadline clocks, chain the event, and write case, event, timers and
outbox together with a row-version check. A refused command raises before anything
is written. Subscribers hear about it after commit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from loguru import logger
from uuid6 import uuid7

from . import risk, rules
from .assignment import DELEGATIONS, Keeper
from .clock import Clock, from_db, to_db
from .convert import case_of, event_of
from .documents import Document, DocumentStore
from .errors import (
    CaseExists,
    CaseNotFound,
    CaseworkError,
    ConflictError,
    IdempotencyKeyReused,
    InvalidInput,
    StoreError,
)
from .events import (
    ActivityRecorded,
    Assigned,
    CaseOpened,
    Delegated,
    Notice,
    Subscribers,
    TransitionApplied,
)
from .log import case_logger
from .machine import CompiledWorkflow
from .outbox import Outbox
from .persistence import CaseRecord, DatabaseUnavailable, DuplicateKey, EventRecord, NewTimer
from .persistence.tx import WriteTx
from .registry import Registry
from .storage import Storage, first_line
from .timers import TimerPlan
from .types import Actor, Case, EventKind, TimerKind

Written = tuple[Case, EventRecord, type[Notice] | None]

_NOTICE = {EventKind.TRANSITION: TransitionApplied, EventKind.ACTIVITY: ActivityRecorded}


def parse_actor(actor: Actor | str) -> Actor:
    try:
        return Actor.parse(actor)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


def check_key(key: str | None) -> None:
    """Keys starting ``timer:`` or ``cron:`` belong to the scheduler."""
    if key is not None and key.startswith(("timer:", "cron:", "retry:")):
        raise InvalidInput(f"idempotency key {key!r}: keys starting 'timer:', 'cron:' or "
                           "'retry:' are the scheduler's")


def command_digest(*parts: Any) -> str:
    """A digest of a keyed command (what it is, on what, by whom, with what input), kept
    with its event: the same key sent with another command is refused."""
    try:
        text = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
                            default=str)
    except (TypeError, orjson.JSONEncodeError):
        text = repr(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()


def plan_timing(wf: CompiledWorkflow, rec: CaseRecord, old_state: str | None, trigger: str,
                changes: dict[str, Any], now: datetime) -> TimerPlan | None:
    """Move the case's SLA clocks with a command (in memory); the timers to change."""
    if not wf.timing.active:
        return None
    plan = wf.timing.on_command(rec.clocks, case_id=rec.id, old_state=old_state,
                                new_state=rec.state, trigger=trigger, changes=changes, now=now)
    if rec.overdue_since is not None and not any(
            c.get("breaches") and c["status"] != "stopped" for c in rec.clocks.values()):
        rec.overdue_since = None
    return plan


def write_plan(tx: WriteTx, case_id: str, plan: TimerPlan | None, now: datetime) -> None:
    """Cancel and create the case's timers in the command's transaction."""
    if not plan:
        return
    if plan.cancel:
        tx.cancel_timers(case_id, sorted(plan.cancel))
    if plan.insert:
        for t in plan.insert:
            t.due_at = to_db(t.due_at)
        tx.insert_timers(plan.insert, to_db(now))


class Commands:
    """Runs commands, each in one write transaction."""

    def __init__(self, storage: Storage, registry: Registry, clock: Clock,
                 subscribers: Subscribers, outbox: Outbox, *, retries: int = 5,
                 documents: DocumentStore | None = None, durable_notices: bool = False) -> None:
        self._durable = durable_notices
        self._documents = documents or DocumentStore()
        self._storage = storage
        self._registry = registry
        self._clock = clock
        self._subscribers = subscribers
        self._outbox = outbox
        self._retries = retries

    # -- the commands ----------------------------------------------------
    def open_case(self, workflow: str, data: Mapping[str, Any] | None, actor: Actor | str, *,
                  case_id: str | None = None, idempotency_key: str | None = None,
                  documents: Sequence[Document] = ()) -> Case:
        wf = self._registry.get(workflow)
        who = parse_actor(actor)
        check_key(idempotency_key)
        refs = self._documents.check(documents)
        now = self._clock.now()
        decision = rules.decide_open(wf, who, dict(data or {}), now)
        values = decision.changes
        cid = case_id or uuid7().hex  # time-ordered: new cases sit together in the indexes
        at = to_db(now)
        digest = (command_digest("open", workflow, case_id, str(who), dict(data or {}), refs)
                  if idempotency_key is not None else None)

        def write(tx: WriteTx) -> Written:
            if idempotency_key is not None:
                prior = tx.event_by_key(idempotency_key)
                if prior is not None:
                    return self._replay(tx, prior, None, "open", digest), prior, None
            if tx.get_case(cid) is not None:
                raise CaseExists(cid)
            # A fresh record on every attempt: a retried attempt starts the chain anew.
            rec = CaseRecord(cid, wf.name, wf.version, wf.initial, wf.is_final(wf.initial),
                             values, 0, at, at, 1, 0, "")
            details: dict[str, Any] = {"documents": refs} if refs else {}
            flagged = risk.assess(tx, wf, rec) if wf.risk_rules else []
            if flagged:
                details["flagged_at_risk"] = flagged
            plan = plan_timing(wf, rec, None, "open", values, now)
            if plan is not None:
                details.update(plan.notes)
            ev = tx.chain_event(rec, kind=EventKind.OPEN.value, name="open", from_state=None,
                                to_state=wf.initial, actor=who.id, role=decision.role, at=at,
                                changes=values, details=details, idempotency_key=idempotency_key,
                                command_digest=digest)
            keeper = Keeper(wf.spec, None)
            keeper.derive(rec)
            tx.insert_case(rec)
            keeper.store(tx, rec)
            self._documents.put(tx, documents, refs, at)
            write_plan(tx, rec.id, plan, now)
            tx.insert_event(ev)
            if flagged:
                tx.add_outbox("flagged", at, case_id=rec.id, seq=ev.seq)
            case_logger(cid, wf.name, values, wf.pii).info(
                "opened {} case in {} by {}", wf.name, wf.initial, who.id)
            return case_of(rec), ev, CaseOpened

        return self._run(write, idempotency_key)

    def fire(self, case_id: str, trigger: str, actor: Actor | str, *,
             data: Mapping[str, Any] | None = None, expected_version: int | None = None,
             idempotency_key: str | None = None, documents: Sequence[Document] = ()) -> Case:
        who = parse_actor(actor)
        check_key(idempotency_key)
        values = dict(data or {})
        refs = self._documents.check(documents)
        digest = (command_digest("fire", case_id, trigger, str(who), values, refs)
                  if idempotency_key is not None else None)
        return self._run(lambda tx: self._fire(tx, case_id, trigger, who, values,
                                               expected_version, idempotency_key, digest,
                                               documents, refs),
                         idempotency_key)

    def _fire(self, tx: WriteTx, case_id: str, trigger: str, who: Actor, data: dict[str, Any],
              expected_version: int | None, key: str | None, digest: str | None,
              documents: Sequence[Document] = (),
              refs: list[dict[str, Any]] | None = None) -> Written:
        rec = tx.lock_case(case_id)
        if rec is None:
            raise CaseNotFound(case_id)
        if key is not None:
            prior = tx.event_by_key(key)
            if prior is not None:
                return self._replay(tx, prior, case_id, trigger, digest), prior, None
        if expected_version is not None and rec.row_version != expected_version:
            raise ConflictError(case_id, expected_version, rec.row_version)
        wf = self._registry.get(rec.workflow, rec.version)
        log = case_logger(case_id, wf.name, rec.data, wf.pii)
        now = self._clock.now()
        state = rec.state
        keeper = Keeper(wf.spec, rec)
        try:
            d = rules.decide(wf, case_id, state, rec.data, trigger, who, data, now, rec.clocks)
        except CaseworkError as e:
            log.info("refused {} by {}: {}", trigger, who.id, e)
            raise
        at = to_db(now)
        old_version = rec.row_version
        rec.state = d.state
        rec.final = wf.is_final(d.state)
        if rec.final:
            rec.closed_at = at
        rec.data = {**rec.data, **d.changes}
        rec.row_version = old_version + 1
        rec.updated_at = at
        details = dict(d.details)
        if refs:
            details["documents"] = refs
        plan = (plan_timing(wf, rec, state, trigger, d.changes, now)
                if d.kind is EventKind.TRANSITION or wf.timing.opens_windows(trigger) else None)
        if plan is not None:
            details.update(plan.notes)
        flagged = (risk.assess(tx, wf, rec)
                   if wf.risk_rules and not rec.at_risk and wf.risk_fields.intersection(d.changes)
                   else [])
        if flagged:
            details["flagged_at_risk"] = flagged
        ev = tx.chain_event(rec, kind=d.kind.value, name=trigger, from_state=state, to_state=d.state,
                            actor=who.id, role=d.role, at=at, changes=d.changes, details=details,
                            idempotency_key=key, command_digest=digest)
        keeper.derive(rec)
        tx.update_case(rec, old_version)
        keeper.store(tx, rec)
        if refs:
            self._documents.put(tx, documents, refs, at)
        write_plan(tx, rec.id, plan, now)
        tx.insert_event(ev)
        if flagged:
            tx.add_outbox("flagged", at, case_id=rec.id, seq=ev.seq)
        log.info("{} {}: {} -> {} by {}", d.kind, trigger, state, d.state, who.id)
        return case_of(rec), ev, _NOTICE[d.kind]

    def assign(self, case_id: str, slot: str, value: Any, actor: Actor | str, *,
               reason: str | None = None, idempotency_key: str | None = None) -> Case:
        """Put ``value`` (a person's id, a unit, or a list of units) in ``slot``."""
        who = parse_actor(actor)
        check_key(idempotency_key)
        digest = (command_digest("assign", case_id, slot, str(who), value, reason)
                  if idempotency_key is not None else None)

        def write(tx: WriteTx) -> Written:
            rec, wf, prior = self._locked(tx, case_id, idempotency_key, f"assign:{slot}", digest)
            if prior is not None:
                return prior
            now = self._clock.now()
            d = rules.decide_assignment(wf, case_id, rec.state, rec.data, slot, value, who,
                                        reason, rec.final)
            name = f"{'re' if d.details['from'] not in (None, '', []) else ''}assign:{slot}"
            return self._record(tx, wf, rec, d, name, who, now, idempotency_key, digest,
                                Assigned, outbox=None)

        return self._run(write, idempotency_key)

    def delegate(self, case_id: str, slot: str, stand_in: str, actor: Actor | str, *,
                 until: datetime, reason: str | None = None,
                 idempotency_key: str | None = None) -> Case:
        """Name ``stand_in`` for the person in ``slot`` until ``until`` (代辦); the stand-in
        loses the slot by itself then (a ``delegation_ended`` event)."""
        who = parse_actor(actor)
        check_key(idempotency_key)
        if not isinstance(until, datetime) or until.tzinfo is None:
            raise InvalidInput("until: an aware datetime (with its time zone)")
        digest = (command_digest("delegate", case_id, slot, str(who), stand_in, until, reason)
                  if idempotency_key is not None else None)

        def write(tx: WriteTx) -> Written:
            rec, wf, prior = self._locked(tx, case_id, idempotency_key, f"delegate:{slot}",
                                          digest)
            if prior is not None:
                return prior
            now = self._clock.now()
            d = rules.decide_delegation(wf, case_id, rec.state, rec.data, slot, stand_in, until,
                                        who, reason, rec.final, now)
            keeper = Keeper(wf.spec, rec)  # who holds the case before the stand-in
            rec.clocks.setdefault(DELEGATIONS, {})[slot] = {
                "to": stand_in, "since": now.isoformat(), "until": until.isoformat(),
                "by": who.id}
            timer = NewTimer(rec.id, wf.name, TimerKind.DELEGATION.value, slot, None, until,
                             {"until": until.isoformat(), "stand_in": stand_in})
            return self._record(tx, wf, rec, d, f"delegate:{slot}", who, now, idempotency_key,
                                digest, Delegated, outbox=None, timers=[timer], keeper=keeper)

        return self._run(write, idempotency_key)

    def _locked(self, tx: WriteTx, case_id: str, key: str | None, name: str,
                digest: str | None) -> tuple[CaseRecord, CompiledWorkflow, Written | None]:
        """The case locked, its workflow, and the first result if ``key`` was applied."""
        rec = tx.lock_case(case_id)
        if rec is None:
            raise CaseNotFound(case_id)
        wf = self._registry.get(rec.workflow, rec.version)
        if key is not None:
            prior = tx.event_by_key(key)
            if prior is not None:
                return rec, wf, (self._replay(tx, prior, case_id, name, digest), prior, None)
        return rec, wf, None

    def _record(self, tx: WriteTx, wf: CompiledWorkflow, rec: CaseRecord, d: rules.Decision,
                name: str, who: Actor, now: datetime, key: str | None, digest: str | None,
                notice: type[Notice], *, outbox: str | None,
                timers: list[NewTimer] | None = None, keeper: Keeper | None = None) -> Written:
        """Write a decision that moves no state: the case's changed fields, its event."""
        keeper = keeper or Keeper(wf.spec, rec)
        old_version = rec.row_version
        at = to_db(now)
        rec.data = {**rec.data, **d.changes}
        rec.row_version = old_version + 1
        rec.updated_at = at
        ev = tx.chain_event(rec, kind=d.kind.value, name=name, from_state=rec.state,
                            to_state=rec.state, actor=who.id, role=d.role, at=at,
                            changes=d.changes, details=d.details, idempotency_key=key,
                            command_digest=digest)
        keeper.derive(rec)
        tx.update_case(rec, old_version)
        keeper.store(tx, rec)
        if timers:
            for t in timers:
                t.due_at = to_db(t.due_at)
            tx.insert_timers(timers, at)
        tx.insert_event(ev)
        if outbox is not None:
            tx.add_outbox(outbox, at, case_id=rec.id, seq=ev.seq)
        case_logger(rec.id, wf.name, rec.data, wf.pii).info("{} {} by {}", d.kind, name, who.id)
        return case_of(rec), ev, notice

    def recompute_deadlines(self, *, provisional_only: bool = True,
                            adopt_calendar: bool = False) -> int:
        """Reschedule running deadlines, each case in its own transaction with a
        ``deadline`` event; how many cases changed. Each clock stays on the calendar it was
        started with unless ``adopt_calendar`` (recorded in the event)."""
        with self._storage.read() as rtx:
            ids = rtx.case_ids()
        changed = 0
        for cid in ids:
            with self._storage.write() as tx:
                rec = tx.lock_case(cid)
                if rec is None or rec.final or not rec.clocks:
                    continue
                if provisional_only and not any(c.get("provisional") for c in rec.clocks.values()):
                    continue
                wf = self._registry.get(rec.workflow, rec.version)
                now = self._clock.now()
                keeper = Keeper(wf.spec, rec)
                plan = wf.timing.recompute(rec.clocks, case_id=rec.id, now=now,
                                           adopt_calendar=adopt_calendar)
                if not plan and rec.next_due_at is not None:
                    continue
                old = rec.row_version
                rec.row_version += 1
                rec.updated_at = to_db(now)
                ev = tx.chain_event(rec, kind=EventKind.DEADLINE.value, name="recomputed",
                                    from_state=rec.state, to_state=rec.state, actor="scheduler",
                                    role="system", at=to_db(now), changes={},
                                    details={"deadlines": sorted(plan.cancel), **plan.notes},
                                    idempotency_key=None)
                keeper.derive(rec)
                tx.update_case(rec, old)
                keeper.store(tx, rec)
                write_plan(tx, rec.id, plan, now)
                tx.insert_event(ev)
                changed += 1
        return changed

    # -- the transaction -------------------------------------------------
    def _run(self, write: Callable[[WriteTx], Written], key: str | None) -> Case:
        """Run one command in one write transaction, then tell subscribers.

        The command goes to the store's write lane (:meth:`Storage.submit`): on SQLite it
        may commit in one transaction with the commands of other threads waiting at the
        same moment, inside a savepoint of its own, so that its refusal or failure is its
        own; it returns (and its notices go out) only once that transaction committed.

        If a concurrent command with the same idempotency key (or the same new case id)
        committed first, the unique index refuses this one; it is run once more, and then
        replays the first result (or refuses with :class:`CaseExists`). A
        command with an idempotency key that fails because the database was unavailable
        (locked past the busy timeout, a lost connection) is retried up to ``retries`` times
        with a growing pause: the key makes the retry safe, whether or not the first try
        committed. Without a key the error is raised; nothing is retried blindly.
        """
        def work(tx: WriteTx) -> tuple[Written, bool]:
            written = write(tx)
            case, ev, notice_cls = written
            if self._durable and notice_cls is not None:
                # The notice is kept with its event; the outbox hands it over.
                tx.add_outbox(notice_cls.name, ev.at, case_id=case.id, seq=ev.seq)
            return written, tx.outbox_written

        attempts = 1 + (self._retries if key is not None else 0)
        attempt = 0
        collided = False
        while True:
            attempt += 1
            try:
                (case, ev, notice_cls), outbox = self._storage.submit(work, retryable=True)
                break
            except DuplicateKey:
                # Another command stored the same key (or case id) first: run once more to
                # replay its result (or to refuse the existing case).
                if collided:
                    raise StoreError("the command collided with another one holding the same "
                                     "key or case id; send it again") from None
                collided = True
                attempt -= 1
            except DatabaseUnavailable as e:
                if attempt >= attempts:
                    logger.bind(case_id="-", workflow="-").warning("database unavailable: {}",
                                                                  first_line(e))
                    tries = f" after {attempts} tries" if attempts > 1 else ""
                    raise StoreError(f"the database is unavailable (locked or unreachable)"
                                     f"{tries}; try again") from None
                time.sleep(min(0.1 * 2 ** attempt, 2.0))  # ~6 s in all: a server restart
        if self._durable:
            if outbox:
                self._outbox.poke()
            return case
        if notice_cls is not None and self._subscribers.wants(notice_cls.name):
            self._subscribers.publish(notice_cls(case, event_of(ev)))
        if outbox:
            try:
                self._outbox.deliver()
            except CaseworkError:  # the command is committed; the scheduler delivers later
                logger.bind(case_id=case.id, workflow=case.workflow).warning(
                    "notices not delivered yet; the next scheduler run delivers them")
        return case

    def _replay(self, tx: WriteTx, prior: EventRecord, case_id: str | None, name: str,
                digest: str | None) -> Case:
        """The result of an already applied command, rebuilt from the history up to its
        event; refused when the key came with another command (nothing of the first is said:
        it may be another petitioner's)."""
        if prior.command_digest is not None:  # what the key was sent with, exactly
            other = prior.command_digest != digest or (
                case_id is not None and prior.case_id != case_id)
        else:  # written before digests were kept: the case and the step must match
            other = (case_id is not None and prior.case_id != case_id) or prior.name != name
        if other:
            raise IdempotencyKeyReused(
                f"idempotency key {prior.idempotency_key!r} was already used for another "
                f"command (on case {prior.case_id}; this one is {name!r} on case "
                f"{case_id or '(new)'}): use a new key for a new command")
        rec = tx.get_case(prior.case_id)
        assert rec is not None
        data: dict[str, Any] = {}
        state = rec.state
        for ev in tx.history(prior.case_id):
            if ev.seq > prior.seq:
                break
            data.update(ev.changes)
            state = ev.to_state or state
        wf = self._registry.get(rec.workflow, rec.version)
        return Case(rec.id, rec.workflow, rec.version, state, data, prior.seq,
                    rec.escalation_level, from_db(rec.opened_at), from_db(prior.at),
                    wf.is_final(state))
