"""The hash chain over a case's events: each event carries the hash of the one before."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

GENESIS = "0" * 64


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


def verify_chain(case_id: str, rows: Iterable[Any]) -> list[str]:
    """Problems in one case's chain (rows ordered by seq); empty when intact."""
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    for r in rows:
        if r.seq != expected_seq:
            problems.append(f"case {case_id}: event seq {r.seq} where {expected_seq} was expected "
                            f"(an event was deleted or inserted)")
            expected_seq = r.seq
        if r.prev_hash != prev:
            problems.append(f"case {case_id}: event {r.seq} does not follow the event before it")
        h = event_hash(r.prev_hash, r.case_id, r.seq, r.kind, r.name, r.from_state, r.to_state,
                       r.actor, r.role, r.at, r.changes, r.details, r.idempotency_key)
        if h != r.hash:
            problems.append(f"case {case_id}: event {r.seq} was altered (hash mismatch)")
        prev = r.hash
        expected_seq += 1
    return problems
