"""The audit: tampering with the stored events is found, and named by case and event.

Rows are changed directly in SQL, behind the engine's back (on a connection of the
test's own, ``tests.helpers``), on SQLite and on PostgreSQL (``any_engine``): an
event's changes, details or actor edited (with and without its hash recomputed), an
event deleted in the middle and at the end, a forged event added after the last,
inserted in the middle (the later events renumbered to make room) or given the number
of an existing one.
``Engine.verify`` and ``run.py verify`` must name exactly what was done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from casework import Engine, FrozenClock
from casework.persistence.chain import GENESIS, event_hash, verify_chain
from casework.persistence.tx import dumps

from tests.conftest import COMPLAINT, PETITION
from tests.helpers import naive, run_cli, sql
from tests.petition_steps import drive, open_petition

STEPS = ("accept", "assign", "extend", "decide", "reply", "visit_unsatisfied")  # 7 events


@pytest.fixture
def office_key(tmp_path: Path) -> Path:
    """The office's key file: the forger here is an insider who holds the key as well."""
    return tmp_path / "office.key"


@pytest.fixture
def any_engine(db_url: str, clock: FrozenClock, office_key: Path) -> Iterator[Engine]:
    with Engine(db_url, [PETITION, COMPLAINT], clock=clock, key_file=office_key) as e:
        yield e


def _key(office_key: Path) -> tuple[str, bytes]:
    """The id and the secret of the key new events are keyed with (the key file is JSON)."""
    keys = json.loads(office_key.read_text(encoding="utf-8"))
    return keys["current"], bytes.fromhex(keys["keys"][keys["current"]])


ROW_CHECK = "altered outside the engine"


def _found(engine: Engine, tampered: str, case_id: str | None = None) -> list[str]:
    """What ``verify`` names in the histories. A tampered history no longer explains its
    case's row (its state, data, row version, seal), and ``verify`` says so after naming
    what was done to the events: those findings must be about the tampered case alone."""
    problems = engine.verify(case_id)
    row = [p for p in problems if p.endswith(ROW_CHECK)]
    assert all(p.startswith(f"case {tampered}: ") for p in row), row
    return [p for p in problems if p not in row]


@pytest.fixture
def cases(any_engine: Engine, clock: FrozenClock) -> tuple[str, str]:
    """Two cases of 7 events each; the first is tampered with, the second never."""
    ids = []
    for _ in range(2):
        case = open_petition(any_engine)
        for step in STEPS:
            clock.advance(hours=5)
            drive(any_engine, case.id, step)
        ids.append(case.id)
    assert any_engine.verify() == []
    return ids[0], ids[1]


def _sql(engine: Engine, statement: str, **params: Any) -> None:
    """Change the stored rows behind the engine's back."""
    sql(engine, statement, **params)


def _forge(engine: Engine, office_key: Path, case_id: str, seq: int, prev_hash: str, *,
           valid: bool = True, actor: str = "mallory") -> str:
    """Insert a forged event ``seq`` linked to ``prev_hash``, keyed with the office's key (a
    correct hash unless not ``valid``); its hash."""
    at = naive(engine.history(case_id)[-1].at + timedelta(minutes=1))
    changes, details = dumps({"outcome": "withdrawn"}), dumps({})
    key_id, key = _key(office_key)
    h = event_hash(prev_hash, case_id, seq, "transition", "forged", "handling", "handling", actor,
                   "leader", at, changes, details, None, key)
    _sql(engine, "INSERT INTO events (case_id, seq, kind, name, from_state, to_state, actor, role, "
                 "at, changes, details, idempotency_key, prev_hash, hash, key_id) VALUES (:c, :s, "
                 "'transition', 'forged', 'handling', 'handling', :a, 'leader', :at, :ch, :d, NULL, "
                 ":p, :h, :k)",
         c=case_id, s=seq, a=actor, at=at, ch=changes, d=details,
         p=prev_hash, h=h if valid else "f" * 64, k=key_id)
    return h


def _hash_of(engine: Engine, case_id: str, seq: int) -> str:
    return next(e.hash for e in engine.history(case_id) if e.seq == seq)


def test_an_untouched_database_verifies(any_engine: Engine, cases: tuple[str, str]) -> None:
    assert any_engine.verify() == []
    assert any_engine.verify(cases[0]) == []


@pytest.mark.parametrize("column,value", [
    ("changes", '{"decision_summary":"nothing was decided"}'),
    ("details", '{"note":"added later"}'),
    ("actor", "mallory"),
    ("role", "supervisor"),
    ("at", None),  # a minute later
])
def test_an_edited_event_is_named_as_altered(any_engine: Engine, cases: tuple[str, str],
                                             column: str, value: Any) -> None:
    tampered, other = cases
    if column == "at":
        value = naive(any_engine.history(tampered)[4].at + timedelta(minutes=1))
    _sql(any_engine, f"UPDATE events SET {column} = :v WHERE case_id = :c AND seq = 5",
         v=value, c=tampered)
    assert _found(any_engine, tampered) == [
        f"case {tampered}: event 5 was altered (its content no longer matches its hash)"]
    assert any_engine.verify(other) == []


def test_an_edit_that_recomputes_the_hash_is_still_found(any_engine: Engine,
                                                         cases: tuple[str, str],
                                                         office_key: Path) -> None:
    """Even with the office's key, an edited event re-hashed is found by the next link."""
    tampered, _ = cases
    ev = any_engine.history(tampered)[4]
    changes = dumps({**ev.changes, "decision_summary": "nothing was decided"})
    [(digest,)] = sql(any_engine, "SELECT command_digest FROM events WHERE case_id = :c AND "
                                  "seq = 5", c=tampered)
    h = event_hash(_hash_of(any_engine, tampered, 4), tampered, 5, ev.kind, ev.name,
                   ev.from_state, ev.to_state, ev.actor, ev.role, naive(ev.at),
                   changes, dumps(ev.details), ev.idempotency_key, _key(office_key)[1], digest)
    _sql(any_engine, "UPDATE events SET changes = :ch, hash = :h WHERE case_id = :c AND seq = 5",
         ch=changes, h=h, c=tampered)
    assert _found(any_engine, tampered) == [
        f"case {tampered}: event 5 was altered and re-hashed (event 6 still links to its "
        f"original hash)"]


def test_a_deleted_event_in_the_middle_is_named_missing(any_engine: Engine,
                                                        cases: tuple[str, str]) -> None:
    tampered, other = cases
    _sql(any_engine, "DELETE FROM events WHERE case_id = :c AND seq = 4", c=tampered)
    assert _found(any_engine, tampered) == [f"case {tampered}: event 4 is missing (deleted)"]
    assert any_engine.verify(other) == []


def test_deleted_events_at_the_end_are_named_missing(any_engine: Engine,
                                                     cases: tuple[str, str]) -> None:
    tampered, _ = cases
    _sql(any_engine, "DELETE FROM events WHERE case_id = :c AND seq = 7", c=tampered)
    assert _found(any_engine, tampered) == [
        f"case {tampered}: event 7 is missing (deleted): the case's head is at event 7, the last "
        f"stored event is 6"]
    _sql(any_engine, "DELETE FROM events WHERE case_id = :c AND seq >= 5", c=tampered)
    assert _found(any_engine, tampered) == [
        f"case {tampered}: events 5 to 7 are missing (deleted): the case's head is at event 7, "
        f"the last stored event is 4"]
    _sql(any_engine, "DELETE FROM events WHERE case_id = :c", c=tampered)
    assert _found(any_engine, tampered) == [f"case {tampered}: all 7 events are missing (deleted)"]


def test_a_deleted_event_hidden_by_renumbering_is_named(any_engine: Engine,
                                                        cases: tuple[str, str]) -> None:
    tampered, _ = cases
    _sql(any_engine, "DELETE FROM events WHERE case_id = :c AND seq = 4", c=tampered)
    _sql(any_engine, "UPDATE events SET seq = seq + 100 WHERE case_id = :c AND seq > 4", c=tampered)
    _sql(any_engine, "UPDATE events SET seq = seq - 101 WHERE case_id = :c AND seq > 100", c=tampered)
    _sql(any_engine, "UPDATE cases SET last_seq = 6 WHERE id = :c", c=tampered)
    assert _found(any_engine, tampered) == [
        f"case {tampered}: event 4 was deleted (events 4 to 6 were recorded as events 5 to 7 and "
        f"renumbered to close the gap)"]


@pytest.mark.parametrize("valid", [True, False], ids=["rehashed", "bad-hash"])
def test_a_forged_event_after_the_last_is_named_inserted(any_engine: Engine,
                                                         cases: tuple[str, str],
                                                         valid: bool, office_key: Path) -> None:
    tampered, other = cases
    _forge(any_engine, office_key, tampered, 8, _hash_of(any_engine, tampered, 7), valid=valid)
    assert _found(any_engine, tampered) == [
        f"case {tampered}: event 8 was inserted after the case's last recorded event (7)"]
    assert any_engine.verify(other) == []


def test_a_forged_event_moved_into_the_head_is_named(any_engine: Engine,
                                                    cases: tuple[str, str], office_key: Path) -> None:
    """The forger also moved the case's head to the forged event, but left its hash wrong."""
    tampered, _ = cases
    _forge(any_engine, office_key, tampered, 8, _hash_of(any_engine, tampered, 7), valid=False)
    _sql(any_engine, "UPDATE cases SET last_seq = 8, last_hash = :h WHERE id = :c",
         h="f" * 64, c=tampered)
    assert _found(any_engine, tampered) == [
        f"case {tampered}: event 8 was altered (its content no longer matches its hash)"]


def test_a_forged_event_in_the_middle_is_named_inserted(any_engine: Engine,
                                                        cases: tuple[str, str], office_key: Path) -> None:
    """Events 5 to 7 renumbered 6 to 8 to make room for a forged event 5 with a good hash."""
    tampered, _ = cases
    _sql(any_engine, "UPDATE events SET seq = seq + 100 WHERE case_id = :c AND seq >= 5", c=tampered)
    _sql(any_engine, "UPDATE events SET seq = seq - 99 WHERE case_id = :c AND seq > 100", c=tampered)
    _forge(any_engine, office_key, tampered, 5, _hash_of(any_engine, tampered, 4))
    assert _found(any_engine, tampered) == [
        f"case {tampered}: event 5 was inserted (events 6 to 8 were recorded as events 5 to 7 and "
        f"renumbered to make room)"]


def test_a_forged_event_with_a_taken_number_is_named_inserted(any_engine: Engine,
                                                              cases: tuple[str, str],
                                                              office_key: Path) -> None:
    """A second event 5 (possible only without the (case, seq) primary key)."""
    if any_engine.backend != "postgresql":
        pytest.skip("SQLite cannot drop the primary key; see the chain tests below")
    tampered, _ = cases
    _sql(any_engine, "ALTER TABLE events DROP CONSTRAINT events_pkey")
    _forge(any_engine, office_key, tampered, 5, _hash_of(any_engine, tampered, 4))
    problems = _found(any_engine, tampered)
    assert len(problems) == 1
    assert problems[0].startswith(f"case {tampered}: event 5 occurs 2 times: 1 was inserted "
                                  f"(transition 'forged' at ")
    assert problems[0].endswith("by mallory)")


# -- verify_chain on rows alone ---------------------------------------------------------
class _Ev:
    def __init__(self, seq: int, prev: str, actor: str = "li") -> None:
        self.case_id, self.seq, self.kind, self.name = "c1", seq, "transition", f"step{seq}"
        self.from_state = self.to_state = "s"
        self.actor, self.role = actor, "clerk"
        self.at = datetime(2026, 1, 1, 9, seq)
        self.changes, self.details, self.idempotency_key = "{}", "{}", None
        self.prev_hash = prev
        self.hash = event_hash(prev, "c1", seq, self.kind, self.name, "s", "s", actor, "clerk",
                               self.at, "{}", "{}", None)


def _chain(n: int) -> list[_Ev]:
    evs: list[_Ev] = []
    for seq in range(1, n + 1):
        evs.append(_Ev(seq, evs[-1].hash if evs else GENESIS))
    return evs


def test_verify_chain_names_a_duplicate_number_and_which_copy_is_forged() -> None:
    evs = _chain(6)
    forged = _Ev(4, evs[2].hash, actor="mallory")
    for rows in ([*evs[:3], forged, *evs[3:]], [*evs[:4], forged, *evs[4:]]):
        problems = verify_chain("c1", rows, head=(6, evs[-1].hash))
        assert problems == ["case c1: event 4 occurs 2 times: 1 was inserted (transition 'step4' at "
                            "2026-01-01T09:04:00 by mallory)"]


def test_verify_chain_names_events_out_of_order() -> None:
    evs = _chain(5)
    rows = [evs[0], evs[2], evs[1], evs[3], evs[4]]
    assert verify_chain("c1", rows, head=(5, evs[-1].hash)) == [
        "case c1: event 2 comes after event 3: the events are out of order"]


def test_verify_chain_names_a_first_event_that_does_not_start_the_chain() -> None:
    evs = [_Ev(1, "a" * 64)]
    assert verify_chain("c1", evs, head=(1, evs[0].hash)) == [
        "case c1: event 1 does not start the chain (it links to an event before it)"]


# -- the command line -------------------------------------------------------------------
def test_cli_verify_says_intact_or_names_each_problem_and_exits_1(tmp_path: Path,
                                                                  clock: FrozenClock) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with Engine(url, [PETITION, COMPLAINT], clock=clock) as engine:
        ids = [open_petition(engine).id for _ in range(3)]
        drive(engine, ids[0], *STEPS)
        drive(engine, ids[1], *STEPS[:3])
    code, out, _ = run_cli("--db", url, "verify")
    assert (code, out) == (0, "3 cases, 12 events: all chains intact\n")
    code, out, _ = run_cli("--db", url, "verify", "--case", ids[1])
    assert (code, out) == (0, "1 case, 4 events: all chains intact\n")

    with Engine(url, [PETITION, COMPLAINT], clock=clock) as engine:
        _sql(engine, "UPDATE events SET changes = '{}' WHERE case_id = :c AND seq = 5", c=ids[0])
        _sql(engine, "DELETE FROM events WHERE case_id = :c AND seq = 4", c=ids[1])
    code, out, err = run_cli("--db", url, "verify")
    assert code == 1
    lines = out.splitlines()
    row = [line for line in lines if line.endswith(ROW_CHECK)]  # see _found
    assert row and all(line.startswith((f"case {ids[0]}: ", f"case {ids[1]}: ")) for line in row)
    assert sorted(set(lines) - set(row)) == sorted([
        f"case {ids[0]}: event 5 was altered (its content no longer matches its hash)",
        f"case {ids[1]}: event 4 is missing (deleted): the case's head is at event 4, the last "
        f"stored event is 3"])
    assert f"{len(lines)} problems in 2 of 3 cases" in err
    code, out, _ = run_cli("--db", url, "verify", "--case", ids[2])
    assert code == 0
    code, _, err = run_cli("--db", url, "verify", "--case", "no-such-case")
    assert code == 1 and "not found" in err
