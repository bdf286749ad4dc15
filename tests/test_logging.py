"""Logging: every line about a case carries its id and workflow; PII never reaches a sink."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from casework import CommandRefused, Engine, configure_logging
from loguru import logger

NAME, PHONE = "Ouyang Xiaoming", "13912345678"


@pytest.fixture
def records() -> Iterator[list[dict]]:
    """Capture every loguru record, as a host's sink would receive it."""
    configure_logging("DEBUG", sink=lambda m: None)
    captured: list[dict] = []
    sink_id = logger.add(lambda m: captured.append(m.record), level="DEBUG")
    yield captured
    logger.remove(sink_id)
    logger.disable("casework")


def _open(engine: Engine) -> str:
    return engine.open_case("petition", {
        "petitioner_name": NAME, "petitioner_phone": PHONE, "channel": "visit", "source": "city",
        "summary": f"petitioner {NAME} says the court ignored {PHONE}",
    }, actor="clerk:li").id


def test_case_lines_carry_case_id_and_workflow(engine: Engine, records: list[dict]) -> None:
    cid = _open(engine)
    engine.fire(cid, "accept", actor="triage:zhao")
    about_case = [r for r in records if r["extra"].get("case_id") == cid]
    assert len(about_case) >= 2
    assert all(r["extra"]["workflow"] == "petition" for r in about_case)


def test_pii_values_are_masked_in_every_message_about_a_case(engine: Engine,
                                                            records: list[dict]) -> None:
    cid = _open(engine)
    engine.fire(cid, "accept", actor="triage:zhao")
    with pytest.raises(CommandRefused):
        engine.fire(cid, "archive", actor="clerk:li")
    from casework.log import case_logger

    wf = engine.workflow("petition")
    case = engine.get_case(cid)
    # Even a careless line that formats the whole data dict is scrubbed by the patcher.
    case_logger(cid, "petition", case.data, wf.pii).info("careless dump: {}", dict(case.data))
    text = "\n".join(r["message"] + repr(r["extra"]) for r in records)
    assert "careless dump" in text
    assert NAME not in text
    assert PHONE not in text
    assert "***" in text


def test_sqlalchemy_standard_logging_is_routed_into_loguru(records: list[dict]) -> None:
    logging.getLogger("sqlalchemy.engine").warning("routed %s", "line")
    assert any(r["message"] == "routed line" for r in records)


def test_library_is_silent_until_a_host_enables_logging(sqlite_url: str) -> None:
    import casework as engine_pkg  # noqa: F401 - importing disables the library's logging

    logger.disable("casework")
    captured: list[str] = []
    sink_id = logger.add(lambda m: captured.append(str(m)), level="DEBUG")
    try:
        from tests.conftest import PETITION

        with Engine(sqlite_url, [PETITION]) as e:
            _open(e)
        assert not [c for c in captured if "opened" in c]
    finally:
        logger.remove(sink_id)


def test_cases_opened_in_the_same_instant_log_with_different_tags(sqlite_url: str) -> None:
    from casework import FrozenClock
    from casework.log import case_tag

    from tests.conftest import PETITION

    lines: list[str] = []
    configure_logging("INFO", sink=lines.append)
    try:
        with Engine(sqlite_url, [PETITION], clock=FrozenClock()) as e:  # one instant for both
            ids = [_open(e) for _ in range(2)]
    finally:
        logger.remove()
        logger.disable("casework")
    assert ids[0][:8] == ids[1][:8]  # a UUIDv7 starts with its time
    tags = [case_tag(cid) for cid in ids]
    assert tags == [ids[0][-12:], ids[1][-12:]] and tags[0] != tags[1]
    for tag in tags:
        opened = [ln for ln in lines if "opened petition case" in ln and f" {tag} petition | " in ln]
        assert len(opened) == 1, lines
    assert not any(ids[0][:8] + " " in ln for ln in lines)  # the old 8-character prefix tag


def test_a_case_id_chosen_by_the_host_is_its_own_tag() -> None:
    from casework.log import case_tag

    assert case_tag("petition-2026-0001") == "petition-2026-0001"
    assert case_tag("0192f3a4-5b6c-7d8e-9f01-23456789abcd") == "23456789abcd"
    assert case_tag(None) == "-"
