"""What a due timer does to its case: a warning, a breach up the escalation ladder, a
cycle coming round. Each is an event the scheduler records on the case, in the timer's
transaction, with a notice in the outbox.

The event kinds a deadline produces, rung by rung (documented in the README):
``warning`` at each share of its time; at the breach, ``escalation`` named after the rung
the case climbs to (and, when the deadline ``repeat``s, again for each further rung), and
once the case stands on the top rung (or the workflow has no ladder) ``breach`` named
``<deadline>_breached`` for each breach after it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .assignment import DELEGATIONS, Keeper
from .clock import from_db, to_db
from .log import case_logger
from .machine import CompiledWorkflow
from .persistence import NewTimer, TimerRecord
from .persistence.tx import WriteTx
from .registry import Registry
from .timers import successor
from .types import EventKind


def timer_key(timer: TimerRecord) -> str:
    """The idempotency key of the event a case timer writes: the same timer, whichever
    database holds it, makes the same key; two different timers never do."""
    share = timer.payload.get("share", "")
    return (f"timer:{timer.case_id}:{timer.kind}:{timer.name}:{share}:"
            f"{timer.due_at.isoformat(timespec='microseconds')}")


def fire_case_timer(registry: Registry, tx: WriteTx, timer: TimerRecord, now: datetime) -> None:
    """Fire a warning, breach, cycle or delegation timer on its case (locked by the caller)."""
    assert timer.case_id is not None
    rec = tx.lock_case(timer.case_id)
    if rec is None:
        return
    wf = registry.get(rec.workflow, rec.version)
    log = case_logger(rec.id, wf.name, rec.data, wf.pii)
    keeper = Keeper(wf.spec, rec)
    key = timer_key(timer)
    due = from_db(timer.due_at)
    details: dict[str, Any] = {"timer": timer.id, "due": due.isoformat()}
    follow: list[NewTimer] = []
    notice = timer.kind
    if timer.kind == "warning":
        details.update(deadline=timer.name, share=timer.payload.get("share"),
                       deadline_due=timer.payload.get("due"))
        kind, name, notice = "warning", f"{timer.name}_warning", "warned"
        log.info("deadline {} at {:.0%} of its time (due {})", timer.name,
                 timer.payload.get("share", 0), timer.payload.get("due"))
    elif timer.kind == "breach":
        kind, name, notice = _breach(wf, rec, timer, due, now, details, follow)
        log.warning("deadline {} breached; escalation level {}", timer.name, rec.escalation_level)
    elif timer.kind == "delegation":
        stand_in = (rec.clocks.get(DELEGATIONS) or {}).get(timer.name)
        if stand_in is None or stand_in.get("until") != timer.payload.get("until"):
            return  # the delegation was withdrawn or replaced: nothing ends now
        del rec.clocks[DELEGATIONS][timer.name]
        details.update(slot=timer.name, stand_in=stand_in["to"], since=stand_in.get("since"))
        kind, name, notice = "delegation", "delegation_ended", "delegated"
        log.info("the stand-in for {} ended", timer.name)
    elif timer.kind == "cycle":
        follow.append(NewTimer(rec.id, wf.name, "cycle", timer.name, timer.state,
                               wf.timing.after(due, wf.spec.cycles[timer.name].every or "0d"),
                               dict(timer.payload)))
        details.update(cycle=timer.name)
        kind, name, notice = "cycle", timer.name, "cycle"
        log.info("cycle {} came round", timer.name)
    else:
        raise ValueError(f"timer {timer.id} has unknown kind {timer.kind!r}")
    after = successor(timer)
    if after is not None:  # the deadline's next instant (its next warning, or its breach)
        follow.append(after)
    keeper.derive(rec)
    append_system_event(tx, rec, kind, name, details, now, key)
    keeper.store(tx, rec)
    if follow:
        for t in follow:
            t.due_at = to_db(t.due_at)
        tx.insert_timers(follow, to_db(now))
    tx.add_outbox(notice, to_db(now), case_id=rec.id, seq=rec.last_seq)


def _breach(wf: CompiledWorkflow, rec: Any, timer: TimerRecord, due: datetime, now: datetime,
            details: dict[str, Any], follow: list[NewTimer]) -> tuple[str, str, str]:
    """One rung up the ladder; the next rung's timer if the deadline says to repeat."""
    spec = wf.spec.deadlines[timer.name]
    clock = rec.clocks.setdefault(timer.name, {})
    clock["breaches"] = clock.get("breaches", 0) + 1
    deadline_due = datetime.fromisoformat(timer.payload.get("due", due.isoformat()))
    if rec.overdue_since is None:
        rec.overdue_since = to_db(deadline_due)
    ladder = wf.spec.escalation
    details.update(deadline=timer.name, deadline_due=deadline_due.isoformat(),
                   overdue_seconds=max(0.0, (now - deadline_due).total_seconds()),
                   overdue_days=round(max(0.0, (now - deadline_due).total_seconds()) / 86400, 2))
    clock["breached_due"] = deadline_due.isoformat()
    clock.pop("next_rung_due", None)
    if spec.breach.escalate and ladder and rec.escalation_level < len(ladder):
        rec.escalation_level += 1
        rung = ladder[rec.escalation_level - 1]
        details.update(level=rec.escalation_level, rung=rung.name)
        if spec.breach.repeat is not None and rec.escalation_level < len(ladder):
            nxt = wf.timing.after(due, spec.breach.repeat)
            clock["next_rung_due"] = nxt.isoformat()
            follow.append(NewTimer(rec.id, wf.name, "breach", timer.name, timer.state, nxt,
                                   {**timer.payload, "rung_due": nxt.isoformat()}))
        return "escalation", rung.name, "escalated"
    details.update(level=rec.escalation_level)
    return "breach", f"{timer.name}_breached", "escalated" if ladder else "breached"


def append_system_event(tx: WriteTx, rec: Any, kind: EventKind | str, name: str, details: dict[str, Any],
                         now: datetime, key: str) -> None:
    """Record an event the scheduler caused on a case, in the timer's transaction."""
    old = rec.row_version
    rec.row_version = old + 1
    rec.updated_at = to_db(now)
    ev = tx.chain_event(rec, kind=str(kind), name=name, from_state=rec.state, to_state=rec.state,
                        actor="scheduler", role="system", at=to_db(now), changes={},
                        details=details, idempotency_key=key)
    tx.update_case(rec, old)
    tx.insert_event(ev)


