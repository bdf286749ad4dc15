"""Early warning (預警): rules that flag a case at risk, over the case and the
petitioner's other cases.

The petitioner is matched on a key derived from the workflow's ``identity`` field (the
party key), so no query ever compares the personal value itself.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from .expressions import ExpressionError
from .machine import CompiledWorkflow
from .persistence import CaseRecord
from .persistence.tx import WriteTx


def party_key(secret: bytes, workflow: str, identity: Any) -> str:
    """The key that matches a petitioner's cases within a workflow: an HMAC under the
    office's identity secret, so the personal value cannot be guessed back from it."""
    return hmac.new(secret, f"{workflow}\x1f{identity}".encode(), hashlib.sha256).hexdigest()


def assess(tx: WriteTx, wf: CompiledWorkflow, rec: CaseRecord) -> list[str]:
    """The rules that flag ``rec`` at risk now (marking it so); none for a case already
    flagged or closed. Sets the case's party key from its identity field."""
    if rec.at_risk or rec.final:
        return []
    names: dict[str, Any] = dict.fromkeys(wf.fields)
    names.update(rec.data)
    if wf.risk_identity is not None and rec.data.get(wf.risk_identity):
        assert tx.keyring is not None, "the engine's store always has a keyring"
        rec.party_key = party_key(tx.keyring.identity, wf.name, rec.data[wf.risk_identity])
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
