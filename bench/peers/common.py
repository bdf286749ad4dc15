"""What the peers share: the petition's rules as glue code would write them, and the driver.

Each peer is the petition lifecycle of ``workflows/petition.yaml`` (the path the benchmark
drives: ``open, accept, assign, decide, reply, return_visit, [continue_work, return_visit,]
archive``) written with another library, the way a team would glue it to a database:

* the glue checks the actor's role for the trigger, refuses input that the trigger does
  not take, refuses missing required input and enum values out of range (the helpers
  below), and computes the values the definition sets (``accepted_at``, ``visit_count`` ...:
  ``bench.workload.computed``, which also sizes the floor's payloads);
* the library holds the states, the allowed moves and the guards (the four fixes on
  ``assign``, ``satisfied`` for ``archive``, not satisfied for ``continue_work``);
* every command is one transaction: read the case, move it, write the case back (with an
  optimistic check) and insert one history row.

What casework does on top of this per step (and the peers do not): pydantic validation of
every input value against the field's declared type, a SHA-256 hash chain over the events,
the SLA clocks and their timer rows, the risk rules, idempotency keys, the outbox.

A peer is anything with ``open_case``, ``fire``, ``check`` and ``close``; ``run_peer``
drives one through the same cases as ``bench.workload.run_engine`` and times it the same
way (``warmup`` cases untimed, then ``n_cases``, one transaction per step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tests.petition_steps import CLERK, OPEN_DATA

from ..db import remove_db
from ..workload import Around, Run, computed, lifecycle, steps_of, timed_pass

# -- the rules of petition.yaml that the glue checks ------------------------------------------

INITIAL = "registered"
FINAL = "archived"

#: trigger -> roles that may fire it (petition.yaml ``roles:``); "open" opens a case.
ROLES: dict[str, frozenset[str]] = {
    "open": frozenset({"clerk", "leader"}),
    "accept": frozenset({"triage", "leader"}),
    "assign": frozenset({"leader", "supervisor"}),
    "decide": frozenset({"leader", "handler"}),
    "reply": frozenset({"handler", "leader"}),
    "return_visit": frozenset({"handler", "leader"}),
    "continue_work": frozenset({"handler", "leader"}),
    "archive": frozenset({"archivist", "clerk"}),
}

#: trigger -> required input (petition.yaml ``required:``).
REQUIRED: dict[str, tuple[str, ...]] = {
    "open": ("petitioner_name", "channel", "source", "summary"),
    "accept": (),
    "assign": ("leader", "handler", "unit", "due_date", "target"),
    "decide": ("outcome", "decision_summary"),
    "reply": ("reply_summary",),
    "return_visit": ("satisfaction",),
    "continue_work": (),
    "archive": (),
}

#: trigger -> optional input (petition.yaml ``optional:``; open takes the registration fields).
OPTIONAL: dict[str, tuple[str, ...]] = {
    "open": ("petitioner_id_number", "petitioner_phone", "petitioner_address", "concerns",
             "received_by_head", "receiving_leader", "group_petition", "petition_count",
             "threatens_higher_visit"),
    "assign": ("assisting_units",),
    "decide": ("state_compensation",),
}

ACCEPTS: dict[str, frozenset[str]] = {
    t: frozenset(REQUIRED[t]) | frozenset(OPTIONAL.get(t, ())) for t in REQUIRED}

ENUMS: dict[str, frozenset[str]] = {
    "channel": frozenset({"visit", "letter", "phone", "online"}),
    "source": frozenset({"central", "province", "city", "direct", "carried_over"}),
    "concerns": frozenset({"police", "procuratorate", "court", "justice_bureau", "township",
                           "other"}),
    "outcome": frozenset({"full_correction", "partial_correction", "explanation", "maintained"}),
    "satisfaction": frozenset({"satisfied", "unsatisfied"}),
}

FOUR_FIXES = ("leader", "handler", "unit", "due_date", "target")


class Refused(Exception):
    """A command the rules refuse (role, input, state or guard); nothing is written."""


def parse_actor(actor: str) -> tuple[frozenset[str], str]:
    """``"role[,role]:id"`` -> (roles, id), as casework's short form."""
    roles, _, ident = actor.partition(":")
    if not ident:
        raise Refused(f"actor {actor!r} is not 'role:id'")
    return frozenset(r for r in roles.split(",") if r), ident.partition("@")[0]


def check_command(trigger: str, actor: str, data: Mapping[str, Any]) -> tuple[str, str]:
    """The glue's checks before the library moves the case; returns (role used, actor id)."""
    allowed = ROLES.get(trigger)
    if allowed is None:
        raise Refused(f"no trigger {trigger!r}")
    roles, ident = parse_actor(actor)
    used = roles & allowed
    if not used:
        raise Refused(f"{trigger!r} needs one of the roles {sorted(allowed)}")
    foreign = set(data) - ACCEPTS[trigger]
    if foreign:
        raise Refused(f"{trigger!r} does not take {sorted(foreign)}")
    missing = [f for f in REQUIRED[trigger] if data.get(f) in (None, "", [])]
    if missing:
        raise Refused(f"missing required input: {', '.join(missing)}")
    for k, v in data.items():
        values = ENUMS.get(k)
        if values is not None and v not in values:
            raise Refused(f"{k}: {v!r} is not one of {sorted(values)}")
    return min(used), ident


def four_fixes_set(values: Mapping[str, Any]) -> bool:
    """The ``assign`` guard: ``leader and handler and unit and due_date and target``."""
    return all(values.get(f) for f in FOUR_FIXES)


def is_satisfied(values: Mapping[str, Any]) -> bool:
    """The ``archive`` guard (and, negated, ``continue_work``'s)."""
    return values.get("satisfaction") == "satisfied"


def utcnow() -> datetime:
    return datetime.now(UTC)


def opening(data: Mapping[str, Any], actor: str) -> tuple[str, str, datetime, dict[str, Any]]:
    """The glue's checks for ``open`` and the case's first values: (role, actor id, now, values)."""
    role, who = check_command("open", actor, data)
    now = utcnow()
    return role, who, now, {**data, **computed("open", data, who, now.isoformat())}


# -- the driver ----------------------------------------------------------------------------------

class Peer(Protocol):
    """One implementation of the lifecycle on one fresh SQLite file."""

    def open_case(self, data: Mapping[str, Any], actor: str) -> str:
        """Open a case (one transaction); return its id."""
        ...

    def fire(self, case_id: str, trigger: str, actor: str, data: Mapping[str, Any]) -> None:
        """Fire ``trigger`` on the case (one transaction); raise :class:`Refused` if refused."""
        ...

    def check(self) -> dict[str, int]:
        """After the run, untimed: ``cases``, ``final`` (cases archived), ``history`` rows."""
        ...

    def close(self) -> None: ...


PeerFactory = Callable[[Path, str], Peer]


def drive_case(peer: Peer, i: int) -> int:
    """Open case ``i`` and fire its lifecycle; the number of transactions."""
    cid = peer.open_case(OPEN_DATA, CLERK)
    n = 1
    for trigger, actor, data in lifecycle(i):
        peer.fire(cid, trigger, actor, data)
        n += 1
    return n


def run_peer(name: str, factory: PeerFactory, db: Path, synchronous: str, n_cases: int,
             warmup: int = 5, around: Around = nullcontext) -> Run:
    """Drive ``n_cases`` petitions to the archive with one peer on a fresh SQLite file, as
    :func:`bench.workload.run_engine` does (one transaction per step). Afterwards (untimed)
    the peer's own tables are checked: every case archived, one history row per transaction.
    """
    remove_db(db)
    peer = factory(db, synchronous)
    try:
        steps, seconds = timed_pass(lambda i, _: drive_case(peer, i), n_cases, warmup, around)
        check = peer.check()
    finally:
        peer.close()
        remove_db(db)
    want_steps = steps + sum(steps_of(i) for i in range(warmup))
    want = {"cases": warmup + n_cases, "final": warmup + n_cases, "history": want_steps}
    got = {k: check.get(k) for k in want}
    if got != want:
        raise RuntimeError(f"{name} at {synchronous}: the database holds {got}, expected {want}")
    return Run(synchronous, steps, seconds, check=check)
