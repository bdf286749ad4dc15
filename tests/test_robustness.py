"""What a host must be able to count on at the edges: retries, faults, bad input, PII."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from casework import CaseworkError, Engine, FrozenClock, InvalidInput, configure_logging
from casework.persistence import DatabaseUnavailable
from loguru import logger
from sqlalchemy import text

from tests.petition_steps import OPEN_DATA, case_in

NAME = OPEN_DATA["petitioner_name"]


def test_a_retried_open_keeps_the_hash_chain_whole(engine: Engine,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = engine.store.write
    failures = [1]

    @contextmanager
    def flaky() -> Iterator[Any]:
        with real() as tx:
            yield tx
            if failures:
                failures.pop()
                raise DatabaseUnavailable("the first commit is lost")

    monkeypatch.setattr(engine.store, "write", flaky)
    case = engine.open_case("petition", OPEN_DATA, actor="clerk:li", idempotency_key="open-1")
    monkeypatch.undo()
    assert [e.seq for e in engine.history(case.id)] == [1]
    assert engine.verify(case.id) == []


def test_a_raising_subscriber_logs_no_personal_data() -> None:
    from tests.conftest import PETITION

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
    with engine.store.engine.begin() as conn:  # the first case's timers are broken
        conn.execute(text("UPDATE timers SET kind = 'bogus' WHERE case_id = :c"), {"c": first.id})
    clock.advance(days=30)
    result = engine.run_due()
    assert result.failed == 1  # the triage deadline's row, which holds its three instants
    assert {e.name for e in engine.history(second.id)} >= {"triage_warning", "supervision_notice"}
    with engine.store.engine.connect() as conn:
        statuses = {r[0] for r in conn.execute(
            text("SELECT status FROM timers WHERE case_id = :c"), {"c": first.id})}
    assert statuses == {"failed"}
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

    from tests.conftest import PETITION

    text_ = PETITION.read_text(encoding="utf-8").replace(
        "    guard: amount > 0\n", "    guard: input.amount > 0\n")
    path = tmp_path / "petition.yaml"
    path.write_text(text_, encoding="utf-8")
    with Engine(f"sqlite:///{tmp_path / 'a.db'}", [load_definition(path)],
                clock=FrozenClock()) as e:
        case = case_in(e, "handling.investigating")
        e.fire(case.id, "funds_raised", actor="leader:chen", data={"amount": 100.0})
        assert e.get_case(case.id).data["funds_total"] == 100.0

