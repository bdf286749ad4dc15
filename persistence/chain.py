"""The hash chain over a case's events: each event carries the hash of the one before.

:func:`verify_chain` recomputes every hash from the stored text and names what
was done to the history: an event *altered* (its content no longer matches its
hash, or it was re-hashed and the next event still links to the original), an
event *missing* (a gap in the sequence, or the case's head points past the last
event), an event *inserted* (a second event with the same number, events after
the case's head, or later events renumbered to make room).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from itertools import groupby, pairwise
from typing import Any

GENESIS = "0" * 64

# How far from its stored number an event's hash is looked for when it no longer
# matches: finds events renumbered to hide an insertion or a deletion.
RENUMBER_WINDOW = 64


def event_hash(prev_hash: str, case_id: str, seq: int, kind: str, name: str,
               from_state: str | None, to_state: str | None, actor: str | None,
               role: str | None, at: datetime, changes_json: str, details_json: str,
               idempotency_key: str | None) -> str:
    """The hash of one event, chained to ``prev_hash``."""
    body = "\x1f".join((
        prev_hash, case_id, str(seq), kind, name, from_state or "", to_state or "",
        actor or "", role or "", at.isoformat(timespec="microseconds"), changes_json, details_json,
        idempotency_key or "",
    ))
    return hashlib.sha256(body.encode()).hexdigest()


def _hash_as(r: Any, seq: int) -> str:
    return event_hash(r.prev_hash, r.case_id, seq, r.kind, r.name, r.from_state, r.to_state,
                      r.actor, r.role, r.at, r.changes, r.details, r.idempotency_key)


def _span(first: int, last: int) -> str:
    return f"event {first}" if first == last else f"events {first} to {last}"


def _verb(first: int, last: int, singular: str, plural: str) -> str:
    return singular if first == last else plural


def _recorded_seq(r: Any) -> int | None:
    """The number an event whose hash no longer matches was recorded under, if only that changed."""
    for d in range(1, RENUMBER_WINDOW + 1):
        for seq in (r.seq - d, r.seq + d):
            if seq >= 1 and _hash_as(r, seq) == r.hash:
                return seq
    return None


def verify_chain(case_id: str, rows: Iterable[Any],
                 head: tuple[int, str] | None = None) -> list[str]:
    """Problems in one case's chain; empty when intact.

    ``rows`` are the case's events in stored order (by seq), each with the event's columns as
    attributes and the JSON columns as the stored text. ``head`` is the case's
    ``(last_seq, last_hash)``; with it, events missing at the end and events added after the
    last recorded one are found too. Every problem names the case and the event.
    """
    problems: list[str] = []

    def say(msg: str) -> None:
        problems.append(f"case {case_id}: {msg}")

    rows = list(rows)
    for a, b in pairwise(rows):
        if b.seq < a.seq:
            say(f"event {b.seq} comes after event {a.seq}: the events are out of order")
            break
    ordered = sorted(rows, key=lambda r: r.seq)

    # Events after the one the case's head points to were added behind the case's back.
    if head is not None:
        at_head = [i for i, r in enumerate(ordered) if r.hash == head[1]]
        if at_head and at_head[-1] < len(ordered) - 1:
            added = ordered[at_head[-1] + 1:]
            first, last = added[0].seq, added[-1].seq
            say(f"{_span(first, last)} {_verb(first, last, 'was', 'were')} inserted after the "
                f"case's last recorded event ({head[0]})")
            ordered = ordered[:at_head[-1] + 1]

    prev_hash, prev_seq = GENESIS, 0
    renumbered: list[tuple[int, int]] = []  # (seq now, seq recorded) of a run of renumbered events
    explained: list[bool] = []  # a renumbering explains the head pointing elsewhere

    def end_run() -> None:
        if not renumbered:
            return
        (s0, r0), (s1, r1) = renumbered[0], renumbered[-1]
        moved = (f"{_span(s0, s1)} {_verb(s0, s1, 'was', 'were')} recorded as {_span(r0, r1)} "
                 f"and renumbered")
        if s0 > r0:
            say(f"{_span(r0, s0 - 1)} {_verb(r0, s0 - 1, 'was', 'were')} inserted ({moved} to make room)")
        else:
            say(f"{_span(s0, r0 - 1)} {_verb(s0, r0 - 1, 'was', 'were')} deleted "
                f"({moved} to close the gap)")
        explained.append(True)
        renumbered.clear()

    groups = [(seq, list(g)) for seq, g in groupby(ordered, key=lambda r: r.seq)]
    for k, (seq, group) in enumerate(groups):
        if seq < 1:
            say(f"event {seq} has an impossible number (events are numbered from 1)")
            continue
        gap = seq > prev_seq + 1
        if gap:
            end_run()
            say(f"{_span(prev_seq + 1, seq - 1)} {_verb(prev_seq + 1, seq - 1, 'is', 'are')} "
                f"missing (deleted)")
        r = group[0]
        if len(group) > 1:
            nxt = groups[k + 1][1] if k + 1 < len(groups) and groups[k + 1][0] == seq + 1 else []
            fits = [x for x in group if _hash_as(x, seq) == x.hash and x.prev_hash == prev_hash]
            fits = [x for x in fits if any(n.prev_hash == x.hash for n in nxt)] or fits
            r = fits[0] if fits else group[0]
            extra = [x for x in group if x is not r]
            which = "; ".join(f"{x.kind} {x.name!r} at {x.at.isoformat(timespec='seconds')} "
                              f"by {x.actor or 'nobody'}" for x in extra)
            say(f"event {seq} occurs {len(group)} times: {len(extra)} "
                f"{'was' if len(extra) == 1 else 'were'} inserted ({which})")
        if _hash_as(r, seq) != r.hash:
            recorded = _recorded_seq(r)
            if recorded is not None:
                if renumbered and (renumbered[-1][0] + 1, renumbered[-1][1] + 1) != (seq, recorded):
                    end_run()
                renumbered.append((seq, recorded))
            else:
                end_run()
                say(f"event {seq} was altered (its content no longer matches its hash)")
        else:
            end_run()
            if not gap and r.prev_hash != prev_hash:
                if prev_seq:
                    say(f"event {prev_seq} was altered and re-hashed (event {seq} still links to "
                        f"its original hash)")
                else:
                    say(f"event {seq} does not start the chain (it links to an event before it)")
        prev_hash, prev_seq = r.hash, seq
    end_run()

    if head is not None:
        last_seq, last_hash = head
        if not ordered and last_seq:
            say(f"all {last_seq} events are missing (deleted)")
        elif prev_seq < last_seq and prev_hash != last_hash:
            say(f"{_span(prev_seq + 1, last_seq)} {_verb(prev_seq + 1, last_seq, 'is', 'are')} "
                f"missing (deleted): the case's head is at event {last_seq}, the last stored "
                f"event is {prev_seq}")
        elif ordered and prev_hash != last_hash:
            say(f"event {prev_seq} was altered or replaced (the case's head holds another hash "
                f"for event {last_seq})")
        elif ordered and prev_seq != last_seq and not explained:
            say(f"the case's head is at event {last_seq} but its last event is {prev_seq}")
    return problems
