"""The hash chain over a case's events: each event carries the hash of the one before.

The chain is keyed: each event's hash is an HMAC-SHA256 under one of the office's keys
(:class:`Keyring`), named by the event's ``key_id``, so nobody without the key can
recompute an edited history into one that verifies. Events written before keys existed
(``key_id`` empty) carry a plain SHA-256 and are still read; re-keying converts them.
The case row is sealed the same way (:func:`seal`): an HMAC over every column of the
row, checked before any command acts on it, so a row edited in the database is refused.

:func:`verify_chain` recomputes every hash from the stored text and names what
was done to the history: an event *altered* (its content no longer matches its
hash, or it was re-hashed and the next event still links to the original), an
event *missing* (a gap in the sequence, or the case's head points past the last
event), an event *inserted* (a second event with the same number, events after
the case's head, or later events renumbered to make room).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby, pairwise
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class Keyring:
    """The office's secret keys, by id, and which one new events are keyed with.

    ``identity`` is a separate, stable secret for the keys that match a petitioner's cases
    (it must not change when the chain's key is rotated). None of these is ever written
    to the database or a ledger.
    """

    current: str
    keys: Mapping[str, bytes]
    identity: bytes = b""
    ephemeral: bool = field(default=False, compare=False)  # made up for this process only

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"the current key {self.current!r} is not among the keys")

    @property
    def key(self) -> bytes:
        return self.keys[self.current]

# How far from its stored number an event's hash is looked for when it no longer
# matches: finds events renumbered to hide an insertion or a deletion.
RENUMBER_WINDOW = 64


def event_hash(prev_hash: str, case_id: str, seq: int, kind: str, name: str,
               from_state: str | None, to_state: str | None, actor: str | None,
               role: str | None, at: datetime, changes_json: str, details_json: str,
               idempotency_key: str | None, key: bytes | None = None,
               command_digest: str | None = None) -> str:
    """The hash of one event, chained to ``prev_hash``: an HMAC under ``key``, or (events
    written before keys existed) a plain SHA-256."""
    parts = [
        prev_hash, case_id, str(seq), kind, name, from_state or "", to_state or "",
        actor or "", role or "", at.isoformat(timespec="microseconds"), changes_json, details_json,
        idempotency_key or "",
    ]
    if key is None:
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    parts.append(command_digest or "")
    return hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()


def seal(keyring: Keyring, parts: Iterable[Any]) -> str:
    """The seal of a case row (``key id:HMAC`` over its columns in stored form)."""
    body = "\x1f".join(_canonical(v) for v in parts)
    digest = hmac.new(keyring.key, body.encode(), hashlib.sha256).hexdigest()
    return f"{keyring.current}:{digest}"


def seal_holds(keyring: Keyring, stored: str | None, parts: Iterable[Any]) -> bool:
    """Whether ``stored`` is the seal of a row with these columns under one of the keys."""
    if not stored or ":" not in stored:
        return False
    kid, _, digest = stored.rpartition(":")
    key = keyring.keys.get(kid)
    if key is None:
        return False
    body = "\x1f".join(_canonical(v) for v in parts)
    return hmac.compare_digest(hmac.new(key, body.encode(), hashlib.sha256).hexdigest(), digest)


def _canonical(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, datetime):
        return v.isoformat(timespec="microseconds")
    return str(v)


def _hash_as(r: Any, seq: int, keyring: Keyring | None = None) -> str | None:
    """The hash of event ``r`` as if numbered ``seq``; None when its key is not known."""
    kid = getattr(r, "key_id", None)
    key = None
    if kid:
        key = keyring.keys.get(kid) if keyring is not None else None
        if key is None:
            return None
    return event_hash(r.prev_hash, r.case_id, seq, r.kind, r.name, r.from_state, r.to_state,
                      r.actor, r.role, r.at, r.changes, r.details, r.idempotency_key, key,
                      getattr(r, "command_digest", None))


def _span(first: int, last: int) -> str:
    return f"event {first}" if first == last else f"events {first} to {last}"


def _verb(first: int, last: int, singular: str, plural: str) -> str:
    return singular if first == last else plural


def _recorded_seq(r: Any, keyring: Keyring | None) -> int | None:
    """The number an event whose hash no longer matches was recorded under, if only that changed."""
    for d in range(1, RENUMBER_WINDOW + 1):
        for seq in (r.seq - d, r.seq + d):
            if seq >= 1 and _hash_as(r, seq, keyring) == r.hash:
                return seq
    return None


def verify_chain(case_id: str, rows: Iterable[Any],
                 head: tuple[int, str] | None = None, keyring: Keyring | None = None) -> list[str]:
    """Problems in one case's chain; empty when intact.

    ``rows`` are the case's events in stored order (by seq), each with the event's columns as
    attributes and the JSON columns as the stored text. ``head`` is the case's
    ``(last_seq, last_hash)``; with it, events missing at the end and events added after the
    last recorded one are found too. Keyed events are checked with ``keyring``'s key of
    their ``key_id``. Every problem names the case and the event.
    """
    problems: list[str] = []

    def say(msg: str) -> None:
        problems.append(f"case {case_id}: {msg}")

    rows = list(rows)
    unknown = sorted({k for r in rows if (k := getattr(r, "key_id", None))
                      and (keyring is None or k not in keyring.keys)})
    if unknown:
        say(f"its events are keyed with {', '.join(map(repr, unknown))}, a key this engine "
            "does not hold: the history cannot be verified (add that office's key)")
        return problems
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
            fits = [x for x in group if _hash_as(x, seq, keyring) == x.hash and x.prev_hash == prev_hash]
            fits = [x for x in fits if any(n.prev_hash == x.hash for n in nxt)] or fits
            r = fits[0] if fits else group[0]
            extra = [x for x in group if x is not r]
            which = "; ".join(f"{x.kind} {x.name!r} at {x.at.isoformat(timespec='seconds')} "
                              f"by {x.actor or 'nobody'}" for x in extra)
            say(f"event {seq} occurs {len(group)} times: {len(extra)} "
                f"{'was' if len(extra) == 1 else 'were'} inserted ({which})")
        if _hash_as(r, seq, keyring) != r.hash:
            recorded = _recorded_seq(r, keyring)
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


def fold_problems(case_id: str, row: Mapping[str, Any], events: Iterable[Any],
                  loads: Any) -> list[str]:
    """Where the case row disagrees with the fold of its events: the state of the last
    event, the data its changes add up to, one row version per event, one escalation
    level per escalation event. ``row`` holds the row's columns (JSON as stored text)."""
    state: str | None = None
    data: dict[str, Any] = {}
    n = 0
    escalations = 0
    for e in events:
        n += 1
        state = e.to_state or state
        data.update(loads(e.changes) if isinstance(e.changes, str) else e.changes)
        if e.kind == "escalation":
            escalations += 1
    if n == 0:
        return []
    out = []
    stored = loads(row["data"]) if isinstance(row["data"], str) else row["data"]
    if row["state"] != state:
        out.append(f"case {case_id}: the row's state {row['state']!r} is not where its history "
                   f"leads ({state!r}): the case was altered outside the engine")
    changed = sorted(k for k in set(stored) | set(data) if stored.get(k) != data.get(k))
    if changed:
        out.append(f"case {case_id}: the row's data differs from its history in "
                   f"{', '.join(changed)}: the case was altered outside the engine")
    if int(row["row_version"]) != n:
        out.append(f"case {case_id}: the row version {row['row_version']} does not match its "
                   f"{n} events: the case was altered outside the engine")
    if int(row["escalation_level"]) != escalations:
        out.append(f"case {case_id}: the escalation level {row['escalation_level']} does not "
                   f"match its {escalations} escalation event(s)")
    return out
