"""What a host must be able to count on at the edges: retries, faults, bad input, PII."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from casework import CaseworkError, Engine, FrozenClock, InvalidInput, configure_logging
from loguru import logger
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tests.conftest import PETITION
from tests.helpers import connection, sql, timer_rows
from tests.petition_steps import OPEN_DATA, case_in

NAME = OPEN_DATA["petitioner_name"]


def _first_attempt_lost(engine: Engine, conn: Connection, opener: threading.Thread) -> None:
    """Make the database unavailable to the command ``opener`` runs, for its first attempt.

    SQLite: ``conn`` holds the write lock (as another process writing would) past the
    engine's busy timeout, then lets go. PostgreSQL: ``conn`` locks the cases table, so the
    command waits in the middle of its transaction (at its insert); its server process is
    terminated there (the connection is lost, as in a server restart), then the lock goes.
    """
    if engine.backend == "sqlite":
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        opener.start()
        time.sleep(0.5)
        return
    conn.execute(text("LOCK TABLE cases IN EXCLUSIVE MODE"))
    opener.start()
    # Asked on a connection of its own each time: a transaction sees the server's activity
    # as it was when it first looked.
    waiting = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
               "AND wait_event_type = 'Lock'")
    deadline = time.monotonic() + 30
    while not (pids := [r[0] for r in sql(engine, waiting)]):
        assert time.monotonic() < deadline, "the command never reached the lock"
        time.sleep(0.01)
    [pid] = pids
    assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()


def test_a_retried_open_keeps_the_hash_chain_whole(db_url: str) -> None:
    """An open with an idempotency key whose first attempt the database fails (see
    ``_first_attempt_lost``) is tried again: one case, one event, its chain intact."""
    with Engine(db_url, [PETITION], busy_timeout_ms=100) as engine:
        got: dict[str, Any] = {}

        def open_it() -> None:
            try:
                got["case"] = engine.open_case("petition", OPEN_DATA, actor="clerk:li",
                                               idempotency_key="open-1")
            except BaseException as e:  # reported below
                got["error"] = e

        opener = threading.Thread(target=open_it)
        started = time.monotonic()
        with connection(engine) as conn:
            _first_attempt_lost(engine, conn, opener)
        opener.join(30)
        assert "error" not in got, got
        assert time.monotonic() - started >= 0.5 or engine.backend != "sqlite"
        case = got["case"]
        assert [e.seq for e in engine.history(case.id)] == [1]
        assert engine.stored_counts() == (1, 1)
        assert engine.verify(case.id) == []


def test_a_raising_subscriber_logs_no_personal_data() -> None:
    lines: list[str] = []
    configure_logging("INFO", sink=lines.append)
    try:
        import tempfile

        with tempfile.TemporaryDirectory() as d, Engine(f"sqlite:///{d}/c.db", [PETITION]) as e:
            def boom(notice: Any) -> None:
                data = dict(notice.case.data)  # a local holding PII when the traceback is printed
                raise RuntimeError(f"subscriber broke on {len(data)} fields")

            e.on("opened", boom)
            e.open_case("petition", OPEN_DATA, actor="clerk:li")
    finally:
        logger.disable("casework")
    text_ = "".join(lines)
    assert "subscriber broke" in text_
    assert NAME not in text_


def test_reports_break_down_only_by_declared_fields_and_never_by_personal_data(
        engine: Engine) -> None:
    engine.open_case("petition", OPEN_DATA, actor="clerk:li")
    with pytest.raises(CaseworkError, match="not broken down by 'petitioner_name'"):
        engine.report("petition", by="petitioner_name")
    with pytest.raises(CaseworkError, match="personal data"):
        engine.report("petition", where={"petitioner_name": NAME})
    with pytest.raises(CaseworkError, match="not a date"):
        engine.report("petition", start="last spring")


def test_a_timer_that_cannot_fire_is_set_aside_and_the_later_ones_still_fire(
        engine: Engine, clock: FrozenClock) -> None:
    first = engine.open_case("petition", OPEN_DATA, actor="clerk:li")
    clock.advance(days=1)
    second = engine.open_case("petition", OPEN_DATA, actor="clerk:li")
    sql(engine, "UPDATE timers SET kind = 'bogus' WHERE case_id = :c", c=first.id)  # broken
    clock.advance(days=30)
    result = engine.run_due()
    assert result.failed == 1  # the triage deadline's row, which holds its three instants
    assert {e.name for e in engine.history(second.id)} >= {"triage_warning", "supervision_notice"}
    assert {t.status for t in timer_rows(engine, first.id)} == {"failed"}
    assert engine.run_due().failed == 0  # set aside: not claimed again


def test_scheduler_keys_are_refused_to_hosts(engine: Engine) -> None:
    case = engine.open_case("petition", OPEN_DATA, actor="clerk:li")
    with pytest.raises(InvalidInput, match="the scheduler's"):
        engine.fire(case.id, "accept", actor="triage:z", idempotency_key="timer:x")
    assert len(engine.history(case.id)) == 1


def test_an_actor_without_a_role_is_refused_as_bad_input(engine: Engine) -> None:
    case = engine.open_case("petition", OPEN_DATA, actor="clerk:li")
    with pytest.raises(InvalidInput, match="actor"):
        engine.fire(case.id, "accept", actor="zhao")


def test_an_activity_guard_reads_the_activitys_input(engine: Engine, tmp_path: Any) -> None:
    from casework import load_definition

    text_ = PETITION.read_text(encoding="utf-8").replace(
        "    guard: amount > 0\n", "    guard: input.amount > 0\n")
    path = tmp_path / "petition.yaml"
    path.write_text(text_, encoding="utf-8")
    with Engine(f"sqlite:///{tmp_path / 'a.db'}", [load_definition(path)],
                clock=FrozenClock()) as e:
        case = case_in(e, "handling.investigating")
        e.fire(case.id, "funds_raised", actor="leader:chen", data={"amount": 100.0})
        assert e.get_case(case.id).data["funds_total"] == 100.0

