"""Re-keying: every case's chain recomputed under the current key, and its row sealed.

Run once after upgrading a database written before keyed histories (plain SHA-256
chains, unsealed rows), or after rotating the key. Each case is re-keyed in its own
transaction and only when its history verifies and its row agrees with the fold of its
events: a case that does not is left as it is and named, for an operator to look at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from sqlalchemy import bindparam, update

from . import models
from .chain import GENESIS, event_hash, fold_problems, verify_chain
from .sql import Statement
from .store import Store
from .tx import loads


@dataclass
class RekeyResult:
    """What a re-keying did: cases re-keyed, already current, and refused (with why)."""

    rekeyed: int = 0
    current: int = 0
    refused: dict[str, list[str]] = field(default_factory=dict)


def rekey(store: Store) -> RekeyResult:
    """Re-key every case of ``store`` under its keyring's current key."""
    keyring = store.keyring
    if keyring is None:
        raise ValueError("re-keying needs a keyring")
    E, C = models.events, models.cases
    dialect = store.engine.dialect
    set_event = Statement(update(E).where(E.c.case_id == bindparam("b_case"),
                                          E.c.seq == bindparam("b_seq"))
                          .values(prev_hash=bindparam("prev_hash"), hash=bindparam("hash"),
                                  key_id=bindparam("key_id")), dialect)
    set_case = Statement(update(C).where(C.c.id == bindparam("b_id"))
                         .values(last_hash=bindparam("last_hash"), seal=bindparam("seal")),
                         dialect)
    L = store.sql.ledger
    result = RekeyResult()
    with store.read() as rtx:
        ids = rtx.case_ids()
    for cid in ids:
        with store.write() as tx:
            rows = tx.fetch(store.sql.lock_case, {"id": cid})
            if not rows:
                continue
            row = rows[0]
            cols = [c.name for c in L.event_cols]
            events = [SimpleNamespace(**dict(zip(cols, r, strict=True)))
                      for r in tx.fetch(L.event_rows, {"id": cid})]
            for e in events:
                e.at = tx.datetime_out(e.at)
            if tx.row_problem(row) is None and all(e.key_id == keyring.current for e in events):
                result.current += 1
                continue
            problems = verify_chain(cid, events, head=(row[10], row[11]), keyring=keyring)
            problems += fold_problems(cid, {"state": row[3], "data": row[5],
                                            "row_version": row[9], "escalation_level": row[6]},
                                      events, loads)
            if problems:
                result.refused[cid] = problems
                continue
            prev = GENESIS
            for e in events:
                h = event_hash(prev, cid, e.seq, e.kind, e.name, e.from_state, e.to_state,
                               e.actor, e.role, e.at, e.changes, e.details, e.idempotency_key,
                               keyring.key, e.command_digest)
                tx.execute(set_event, {"b_case": cid, "b_seq": e.seq, "prev_hash": prev,
                                       "hash": h, "key_id": keyring.current})
                prev = h
            rec = tx.record(row)
            rec.last_hash = prev
            tx.execute(set_case, {"b_id": cid, "last_hash": prev, "seal": tx.seal_of(rec)})
            result.rekeyed += 1
    return result
