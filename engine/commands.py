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
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from loguru import logger
from uuid6 import uuid7

from . import risk, rules
from .clock import Clock, from_db, to_db
from .convert import case_of, event_of
from .errors import (
    CaseExists,
    CaseNotFound,
    CaseworkError,
    ConflictError,
    IdempotencyKeyReused,
    InvalidInput,
    StoreError,
)
from .events import ActivityRecorded, CaseOpened, Notice, Subscribers, TransitionApplied
from .log import case_logger
from .machine import CompiledWorkflow
from .outbox import Outbox
from .persistence import CaseRecord, DatabaseUnavailable, DuplicateKey, EventRecord
from .persistence.tx import WriteTx
from .registry import Registry
from .storage import Storage, first_line
from .timers import TimerPlan
from .types import Actor, Case, EventKind

Written = tuple[Case, EventRecord, type[Notice] | None]

_NOTICE = {EventKind.TRANSITION: TransitionApplied, EventKind.ACTIVITY: ActivityRecorded}


def parse_actor(actor: Actor | str) -> Actor:
    try:
        return Actor.parse(actor)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


def check_key(key: str | None) -> None:
    """Keys starting ``timer:`` or ``cron:`` belong to the scheduler."""
    if key is not None and key.startswith(("timer:", "cron:")):
        raise InvalidInput(f"idempotency key {key!r}: keys starting 'timer:' or 'cron:' are "
                           "the scheduler's")


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
                 subscribers: Subscribers, outbox: Outbox, *, retries: int = 5) -> None:
        self._storage = storage
        self._registry = registry
        self._clock = clock
        self._subscribers = subscribers
        self._outbox = outbox
        self._retries = retries

    # -- the commands ----------------------------------------------------
    def open_case(self, workflow: str, data: Mapping[str, Any] | None, actor: Actor | str, *,
                  case_id: str | None = None, idempotency_key: str | None = None) -> Case:
        wf = self._registry.get(workflow)
        who = parse_actor(actor)
        check_key(idempotency_key)
        now = self._clock.now()
        decision = rules.decide_open(wf, who, dict(data or {}), now)
        values = decision.changes
        cid = case_id or uuid7().hex  # time-ordered: new cases sit together in the indexes
        at = to_db(now)
        digest = (command_digest("open", workflow, case_id, str(who), dict(data or {}))
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
            details: dict[str, Any] = {}
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
            tx.insert_case(rec)
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
             idempotency_key: str | None = None) -> Case:
        who = parse_actor(actor)
        check_key(idempotency_key)
        values = dict(data or {})
        digest = (command_digest("fire", case_id, trigger, str(who), values)
                  if idempotency_key is not None else None)
        return self._run(lambda tx: self._fire(tx, case_id, trigger, who, values,
                                               expected_version, idempotency_key, digest),
                         idempotency_key)

    def _fire(self, tx: WriteTx, case_id: str, trigger: str, who: Actor, data: dict[str, Any],
              expected_version: int | None, key: str | None, digest: str | None) -> Written:
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
        tx.update_case(rec, old_version)
        write_plan(tx, rec.id, plan, now)
        tx.insert_event(ev)
        if flagged:
            tx.add_outbox("flagged", at, case_id=rec.id, seq=ev.seq)
        log.info("{} {}: {} -> {} by {}", d.kind, trigger, state, d.state, who.id)
        return case_of(rec), ev, _NOTICE[d.kind]

    def recompute_deadlines(self, *, provisional_only: bool = True) -> int:
        """Reschedule running deadlines, each case in its own transaction with a
        ``deadline`` event; how many cases changed."""
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
                plan = wf.timing.recompute(rec.clocks, case_id=rec.id, now=now)
                if not plan:
                    continue
                old = rec.row_version
                rec.row_version += 1
                rec.updated_at = to_db(now)
                ev = tx.chain_event(rec, kind=EventKind.DEADLINE.value, name="recomputed",
                                    from_state=rec.state, to_state=rec.state, actor="scheduler",
                                    role="system", at=to_db(now), changes={},
                                    details={"deadlines": sorted(plan.cancel), **plan.notes},
                                    idempotency_key=None)
                tx.update_case(rec, old)
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
            return write(tx), tx.outbox_written

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
        other = ((case_id is not None and prior.case_id != case_id) or prior.name != name
                 or (prior.command_digest is not None and prior.command_digest != digest))
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
