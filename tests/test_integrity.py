"""No way around the rules, no silent change, no leak: the edges of the engine.

Each test is an attack or a careless input, tried as a user would, and proves it is
refused or handled with nothing written, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from casework import (
    CaseAltered,
    CaseExists,
    Engine,
    FrozenClock,
    IdempotencyKeyReused,
    InvalidInput,
    LedgerRefused,
    configure_logging,
)
from loguru import logger

from tests.conftest import PETITION
from tests.helpers import run_cli, sql
from tests.petition_steps import CLERK, OPEN_DATA, case_in, drive, open_petition, snapshot


def _sql(engine: Engine, statement: str, **params: Any) -> None:
    """Change the database behind the engine's back, as someone with database access would."""
    sql(engine, statement, **params)


def _second_version(tmp_path: Path) -> Path:
    """The petition workflow with another description: the same rules, a new version."""
    text_ = PETITION.read_text(encoding="utf-8").replace(
        "title: Litigation-related petition case", "title: Petition case (second version)")
    out = tmp_path / "petition.yaml"
    out.write_text(text_, encoding="utf-8")
    return out


# -- 1. migration cannot put a case where the rules could not --------------------------
def test_a_migration_never_moves_a_case_into_a_final_state(
        db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    with Engine(db_url, [PETITION], clock=clock, key_file=tmp_path / "k.key") as old:
        case = case_in(old, "follow_up.continued_work")
        before = snapshot(old, case.id)
    with Engine(db_url, [_second_version(tmp_path)], clock=clock,
                key_file=tmp_path / "k.key") as new:
        plan = new.migrate("petition", "latest", {"follow_up.continued_work": "archived"})
        assert [i.case_id for i in plan.refused] == [case.id]
        assert "final state" in (plan.refused[0].refused or "")
        done = new.migrate("petition", "latest", {"follow_up.continued_work": "archived"},
                           dry_run=False, override_reason="tidying up", approved_by="director")
        assert [i.case_id for i in done.refused] == [case.id]
        assert snapshot(new, case.id) == before
        assert new.verify() == []


def test_a_migration_into_a_state_whose_entry_rules_the_data_fails_is_refused_unless_approved(
        db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    with Engine(db_url, [PETITION], clock=clock, key_file=key) as old:
        case = case_in(old, "replied")  # no satisfaction recorded yet
        before = snapshot(old, case.id)
    with Engine(db_url, [_second_version(tmp_path)], clock=clock, key_file=key) as new:
        mapping = {"replied": "follow_up.visited"}
        plan = new.migrate("petition", "latest", mapping)
        assert [i.case_id for i in plan.refused] == [case.id]
        assert "satisfaction" in (plan.refused[0].refused or "")
        new.migrate("petition", "latest", mapping, dry_run=False)
        assert snapshot(new, case.id) == before
        done = new.migrate("petition", "latest", mapping, dry_run=False,
                           override_reason="visit recorded on paper", approved_by="director:liu")
        assert done.refused == [] and done.moved[0].overridden
        last = new.history(case.id)[-1]
        assert last.kind == "migration"
        assert last.details["override"]["approved_by"] == "director:liu"
        assert last.details["override"]["reason"] == "visit recorded on paper"
        # The archive rule still holds after the move: the petitioner was never satisfied.
        with pytest.raises(Exception, match="satisf"):
            new.fire(case.id, "archive", actor="archivist:zhou")
        assert new.verify() == []


def test_opening_a_case_with_fields_that_later_steps_set_is_refused(any_engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="satisfaction: not an input of 'open'"):
        any_engine.open_case("petition", {**OPEN_DATA, "satisfaction": "satisfied"}, actor=CLERK)
    assert any_engine.stored_counts() == (0, 0)


# -- 2, 3. a ledger cannot bring a history that could not have happened -----------------------
def _export(engine: Engine, case_id: str) -> list[dict[str, Any]]:
    buf = io.StringIO()
    engine.export_cases(buf, case_ids=[case_id])
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def _forge_archive(lines: list[dict[str, Any]], key: bytes | None, key_id: str | None) -> str:
    """Append an ``archive`` event to the case's history and recompute the chain with ``key``
    (None: a plain SHA-256, as anyone could)."""
    from casework.persistence.chain import event_hash

    case_line = next(x for x in lines if "case" in x)
    row, events = case_line["case"], case_line["events"]
    last = events[-1]
    at = last["at"]
    ev = {**last, "seq": last["seq"] + 1, "kind": "transition", "name": "archive",
          "from_state": row["state"], "to_state": "archived", "actor": "zhou",
          "role": "archivist", "changes": orjson.dumps({"archived_at": at}).decode(),
          "details": "{}", "idempotency_key": None, "prev_hash": last["hash"],
          "key_id": key_id, "command_digest": None}
    from datetime import datetime

    ev["hash"] = event_hash(ev["prev_hash"], ev["case_id"], ev["seq"], ev["kind"], ev["name"],
                            ev["from_state"], ev["to_state"], ev["actor"], ev["role"],
                            datetime.fromisoformat(at), ev["changes"], ev["details"], None, key)
    events.append(ev)
    data = orjson.loads(row["data"])
    data["archived_at"] = at
    row.update(state="archived", final=True, data=orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
               .decode(), row_version=row["row_version"] + 1, last_seq=ev["seq"],
               last_hash=ev["hash"])
    return "".join(json.dumps(x) + "\n" for x in lines)


def test_a_forged_archive_with_a_recomputed_plain_chain_is_refused_on_import(
        db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'src.db'}", [PETITION], clock=clock) as src:
        case = case_in(src, "follow_up.continued_work")
        forged = _forge_archive(_export(src, case.id), None, None)
    with Engine(db_url, [PETITION], clock=clock, key_file=tmp_path / "t.key") as target, \
            pytest.raises(LedgerRefused) as err:
        target.import_cases(io.StringIO(forged))
    assert case.id in str(err.value)
    with Engine(db_url, [PETITION], clock=clock, key_file=tmp_path / "t.key") as target:
        assert target.stored_counts() == (0, 0)


def test_a_forged_archive_keyed_with_the_offices_own_key_is_refused_by_the_rules(
        db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    """Even someone holding the key cannot bring in a history the rules forbid: the archive
    of an unsatisfied petitioner is replayed against the workflow and refused."""
    key_file = tmp_path / "office.key"
    with Engine(f"sqlite:///{tmp_path / 'src.db'}", [PETITION], clock=clock,
                key_file=key_file) as src:
        case = case_in(src, "follow_up.visited")
        assert case.data["satisfaction"] == "unsatisfied"
        lines = _export(src, case.id)
    keys = json.loads(key_file.read_text())
    forged = _forge_archive(lines, bytes.fromhex(keys["keys"][keys["current"]]), keys["current"])
    with Engine(db_url, [PETITION], clock=clock, key_file=key_file) as target:
        with pytest.raises(LedgerRefused) as err:
            target.import_cases(io.StringIO(forged))
        problems = "\n".join(err.value.problems)
        assert case.id in problems and "archive" in problems and "satisf" in problems
        assert target.stored_counts() == (0, 0)


def test_a_ledger_from_another_office_verifies_with_that_offices_key(
        db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    theirs, ours = tmp_path / "theirs.key", tmp_path / "ours.key"
    with Engine(f"sqlite:///{tmp_path / 'src.db'}", [PETITION], clock=clock,
                key_file=theirs) as src:
        case = case_in(src, "handling.investigating")
        buf = io.StringIO()
        src.export_cases(buf, case_ids=[case.id])
    with Engine(db_url, [PETITION], clock=clock, key_file=ours) as target, \
            pytest.raises(LedgerRefused, match="key"):
        target.import_cases(io.StringIO(buf.getvalue()))
    keys = json.loads(theirs.read_text(encoding="utf-8"))  # the key file is JSON
    added = run_cli("keys", "add", ours, keys["current"], keys["keys"][keys["current"]])
    assert added.code == 0, added.output
    with Engine(db_url, [PETITION], clock=clock, key_file=ours) as target:
        target.import_cases(io.StringIO(buf.getvalue()))
        assert target.verify() == []
        assert target.get_case(case.id).state == "handling.investigating"
        drive(target, case.id, "decide")  # the imported case is sealed under this office's key
        assert target.verify() == []


def test_a_rotated_key_keeps_old_histories_verifiable(
        sqlite_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    with Engine(sqlite_url, [PETITION], clock=clock, key_file=key_file) as e:
        case = case_in(e, "handling.investigating")
    rotated = run_cli("keys", "rotate", key_file)
    assert rotated.code == 0, rotated.output
    with Engine(sqlite_url, [PETITION], clock=clock, key_file=key_file) as e:
        assert e.verify() == []
        drive(e, case.id, "decide")
        assert e.verify() == []
        assert e.rekey().rekeyed == 1
        assert e.verify() == []
        kinds = {ev.hash for ev in e.history(case.id)}
        assert len(kinds) == len(e.history(case.id))


def test_the_key_file_is_created_beside_the_database_readable_only_by_its_owner(
        tmp_path: Path) -> None:
    db = tmp_path / "cases.db"
    with Engine(f"sqlite:///{db}", [PETITION]) as e:
        open_petition(e)
    key = tmp_path / "cases.db.key"
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600
    assert key.read_bytes() not in db.read_bytes()
    secret = json.loads(key.read_text())
    for hex_key in secret["keys"].values():
        assert bytes.fromhex(hex_key) not in db.read_bytes() and hex_key.encode() not in db.read_bytes()


# -- 4. the case row is checked against its history -----------------------------------------
@pytest.mark.parametrize("edit", [
    "UPDATE cases SET state = 'follow_up.visited'",
    "UPDATE cases SET data = REPLACE(data, '\"unsatisfied\"', '\"satisfied\"')",
    "UPDATE cases SET row_version = row_version + 5",
    "UPDATE cases SET seal = NULL",
])
def test_a_case_row_edited_in_the_database_fails_verify_and_refuses_commands(
        any_engine: Engine, edit: str) -> None:
    case = case_in(any_engine, "follow_up.continued_work")
    _sql(any_engine, edit)
    problems = any_engine.verify(case.id)
    assert problems and all(case.id in p for p in problems)
    assert any("altered outside the engine" in p or "seal" in p for p in problems)
    with pytest.raises(CaseAltered, match=case.id):
        any_engine.fire(case.id, "return_visit", actor="handler:wu",
                        data={"satisfaction": "satisfied"})


def test_an_escalation_wiped_from_the_row_is_found_and_refused(
        any_engine: Engine, clock: FrozenClock) -> None:
    case = case_in(any_engine, "handling.investigating")
    clock.advance(days=75)
    any_engine.run_due()
    assert any_engine.get_case(case.id).escalation_level >= 1
    _sql(any_engine, "UPDATE cases SET escalation_level = 0, overdue_since = NULL")
    problems = any_engine.verify(case.id)
    assert any("escalation level" in p for p in problems)
    with pytest.raises(CaseAltered):
        any_engine.fire(case.id, "thought_work", actor="handler:wu", data={"notes": "x"})


def test_a_forged_satisfaction_in_the_row_cannot_be_archived(any_engine: Engine) -> None:
    case = case_in(any_engine, "follow_up.visited")
    assert any_engine.get_case(case.id).data["satisfaction"] == "unsatisfied"
    _sql(any_engine, "UPDATE cases SET data = REPLACE(data, '\"unsatisfied\"', '\"satisfied\"')")
    with pytest.raises(CaseAltered):
        any_engine.fire(case.id, "archive", actor="archivist:zhou")
    assert any_engine.get_case(case.id).state == "follow_up.visited"


# -- 5. values that would be silently changed or crash ---------------------------------------
BAD_VALUES: list[tuple[str, str, Any, str]] = [
    # (trigger or activity, field, value, what the refusal says)
    ("funds_raised", "amount", float("nan"), "finite"),
    ("funds_raised", "amount", float("inf"), "finite"),
    ("funds_raised", "amount", float("-inf"), "finite"),
    ("funds_raised", "amount", "NaN", "amount"),
    ("funds_raised", "amount", "Infinity", "amount"),
    ("extend", "extension_days", 2**64, "extension_days"),
    ("extend", "extension_days", -(2**70), "extension_days"),
    ("thought_work", "notes", "\ud800", "surrogate"),
    ("thought_work", "notes", "a\x00b", "NUL"),
    ("thought_work", "notes", "x" * 200_001, "longer"),
    ("coordination_meeting", "attendees", "deep", "nested deeper"),
    ("coordination_meeting", "attendees", "wide", "more than"),
    ("coordination_meeting", "attendees", [float("nan"), "court"], "NaN"),
    ("coordination_meeting", "attendees", [2**64, "court"], "safe range"),
    ("coordination_meeting", "attendees", ["court", "a\x00"], "NUL"),
]


def _value(v: Any) -> Any:
    if v == "deep":
        out: Any = "court"
        for _ in range(10_000):
            out = [out]
        return out
    if v == "wide":
        return ["unit"] * 100_000
    return v


@pytest.mark.parametrize(("step", "field", "value", "says"), BAD_VALUES,
                         ids=[f"{s}-{f}-{i}" for i, (s, f, _, _) in enumerate(BAD_VALUES)])
def test_a_value_out_of_range_is_refused_naming_the_field_and_nothing_is_written(
        any_engine: Engine, step: str, field: str, value: Any, says: str) -> None:
    case = case_in(any_engine, "handling.investigating")
    before = snapshot(any_engine, case.id)
    data = {"extension_reason": "complex"} if step == "extend" else {}
    if step == "coordination_meeting":
        data["agreed"] = "to meet again"
    data[field] = _value(value)
    actor = "leader:chen"
    with pytest.raises(InvalidInput) as err:
        any_engine.fire(case.id, step, actor=actor, data=data)
    assert field in str(err.value) and says in str(err.value)
    assert snapshot(any_engine, case.id) == before
    assert any_engine.report("petition").totals["received"] == 1  # reports still read


@pytest.mark.parametrize("depth", [254, 255, 280, 299, 300])
def test_lists_nested_at_the_depths_that_broke_the_json_writer_are_refused(
        any_engine: Engine, depth: int) -> None:
    case = case_in(any_engine, "handling.investigating")
    nested: Any = "court"
    for _ in range(depth):
        nested = [nested]
    with pytest.raises(InvalidInput, match="attendees"):
        any_engine.fire(case.id, "coordination_meeting", actor="leader:chen",
                        data={"attendees": nested, "agreed": "x"})


# -- 8. idempotency keys never hand back another command's result ------------------------------
def test_a_key_reused_with_other_input_is_refused_without_echoing_the_first(
        any_engine: Engine) -> None:
    case = case_in(any_engine, "handling.investigating")
    any_engine.fire(case.id, "funds_raised", actor="leader:chen", data={"amount": 100.0},
                    idempotency_key="f-1")
    with pytest.raises(IdempotencyKeyReused) as err:
        any_engine.fire(case.id, "funds_raised", actor="leader:chen",
                        data={"amount": 999999.0}, idempotency_key="f-1")
    assert "100" not in str(err.value)
    assert any_engine.get_case(case.id).data["funds_total"] == 100.0
    # The same command again is answered from the history, as before.
    again = any_engine.fire(case.id, "funds_raised", actor="leader:chen",
                            data={"amount": 100.0}, idempotency_key="f-1")
    assert again.data["funds_total"] == 100.0


def test_an_open_with_a_reused_key_and_another_petitioner_gets_nothing_of_the_first(
        any_engine: Engine) -> None:
    any_engine.open_case("petition", OPEN_DATA, actor=CLERK, idempotency_key="intake-1")
    other = {**OPEN_DATA, "petitioner_name": "Li Si", "petitioner_phone": "13911112222"}
    with pytest.raises(IdempotencyKeyReused) as err:
        any_engine.open_case("petition", other, actor=CLERK, idempotency_key="intake-1")
    assert OPEN_DATA["petitioner_name"] not in str(err.value)
    assert any_engine.stored_counts()[0] == 1


# -- 9, 10, 11. personal data does not leak ---------------------------------------------------
@pytest.fixture
def log_lines() -> Any:
    lines: list[str] = []
    configure_logging("DEBUG", sink=lambda m: lines.append(str(m)))
    yield lines
    logger.remove()
    logger.disable("casework")


def test_a_failing_subscriber_is_logged_with_the_petitioners_data_masked(
        engine: Engine, log_lines: list[str]) -> None:
    def careless(notice: Any) -> None:
        raise RuntimeError(f"could not text {notice.case.data['petitioner_phone']}")

    engine.on("opened", careless)
    open_petition(engine)
    text_ = "\n".join(log_lines)
    assert "careless" in text_ and "RuntimeError" in text_
    assert OPEN_DATA["petitioner_phone"] not in text_


def test_values_bound_to_a_log_record_as_extras_are_masked(
        engine: Engine, log_lines: list[str]) -> None:
    from casework.log import case_logger

    case = open_petition(engine)
    wf = engine.workflow("petition")
    captured: list[dict[str, Any]] = []
    sink = logger.add(lambda m: captured.append(dict(m.record["extra"])), level="DEBUG")
    try:
        case_logger(case.id, "petition", case.data, wf.pii).bind(
            contact=OPEN_DATA["petitioner_phone"],
            who={"name": OPEN_DATA["petitioner_name"]}).info("called back")
    finally:
        logger.remove(sink)
    assert captured
    flat = json.dumps(captured, default=str, ensure_ascii=False)
    assert OPEN_DATA["petitioner_phone"] not in flat and OPEN_DATA["petitioner_name"] not in flat


def test_a_guard_error_does_not_quote_the_value_it_failed_on(any_engine: Engine) -> None:
    case = case_in(any_engine, "follow_up.continued_work")
    _forged = {"replied_at": "Wang Xiaoming"}
    with pytest.raises(InvalidInput) as err:  # the value is refused as a datetime first
        any_engine.fire(case.id, "request_review", actor=CLERK, data=_forged)
    assert "Wang" not in str(err.value)


def test_the_identity_key_cannot_be_recomputed_without_the_offices_secret(
        engine: Engine) -> None:
    import hashlib

    id_number = "110101198001010011"
    case = open_petition(engine, petitioner_id_number=id_number)
    [(stored,)] = sql(engine, "SELECT party_key FROM cases WHERE id = :i", i=case.id)
    assert stored and stored != hashlib.sha256(f"petition\x1f{id_number}".encode()).hexdigest()


def test_a_masked_export_hides_personal_data_and_cannot_be_imported(
        engine: Engine, tmp_path: Path, clock: FrozenClock) -> None:
    case = case_in(engine, "handling.investigating")
    buf = io.StringIO()
    engine.export_cases(buf, masked=True)
    out = buf.getvalue()
    assert case.id in out
    for v in (OPEN_DATA["petitioner_name"], OPEN_DATA["petitioner_phone"]):
        assert v not in out
    with Engine(f"sqlite:///{tmp_path / 'other.db'}", [PETITION], clock=clock) as other, \
            pytest.raises(LedgerRefused, match="masked"):
        other.import_cases(io.StringIO(out))


# -- 12. the same new id from many threads ---------------------------------------------------
def test_opening_one_id_from_eight_threads_opens_one_case_and_refuses_the_rest_cleanly(
        any_engine: Engine) -> None:
    outcomes: list[str] = []
    start = threading.Barrier(8, timeout=60)

    def worker() -> None:
        start.wait()
        try:
            any_engine.open_case("petition", OPEN_DATA, actor=CLERK, case_id="same-id")
            outcomes.append("opened")
        except CaseExists:
            outcomes.append("exists")
        except Exception as e:  # anything else is the defect under test
            outcomes.append(f"{type(e).__module__}.{type(e).__name__}")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["exists"] * 7 + ["opened"]
    assert any_engine.stored_counts() == (1, 1)


# -- 15. days_between converts time zones ----------------------------------------------------
# (test_days_between_converts_offsets_instead_of_dropping_them: in test_expressions, as a guard)


# -- the timer lease, fast, on both databases ------------------------------------------------
def test_a_timer_claimed_by_another_process_is_not_fired_before_its_lease_ends_and_once_after(
        any_engine: Engine, clock: FrozenClock) -> None:
    from datetime import timedelta

    case = open_petition(any_engine)
    clock.advance(days=8)  # the triage deadline's first warning (50% of 15 days) is due
    due = [t for t in any_engine.pending_timers(case.id) if t.due_at <= clock.now()]
    assert due
    lease_end = clock.now() + timedelta(minutes=5)
    # Another scheduler claimed the timer and is still working (or died): its claim stands.
    _sql(any_engine, "UPDATE timers SET claimed_by = 'other-host:42', lease_until = :until "
                     "WHERE id = :id", until=lease_end.replace(tzinfo=None), id=due[0].id)
    assert any_engine.run_due().fired == 0
    assert not [e for e in any_engine.history(case.id) if e.kind == "warning"]
    clock.set(lease_end - timedelta(seconds=1))
    assert any_engine.run_due().fired == 0
    clock.set(lease_end + timedelta(seconds=1))
    assert any_engine.run_due().fired == 1
    assert any_engine.run_due().fired == 0
    warnings = [e for e in any_engine.history(case.id) if e.kind == "warning"]
    assert len(warnings) == 1


# -- 6. a definition cannot hold a guard that exhausts the host ------------------------------
@pytest.mark.parametrize(("guard", "says"), [
    ('"%999999999d" % 1 == "x"', "string formatting"),
    ("not " * 10_000 + "extended", "at most 2,000 characters"),
    ("+".join(["extended"] * 200) + " > 1", "too large"),
])
def test_a_definition_with_an_exhausting_guard_is_refused_at_load_with_its_line(
        guard: str, says: str) -> None:
    from casework import DefinitionError, parse_definition

    text_ = PETITION.read_text(encoding="utf-8").replace(
        "guard: satisfaction != \"satisfied\"\n", f"guard: '{guard}'\n", 1)
    with pytest.raises(DefinitionError) as err:
        parse_definition(text_, "petition.yaml")
    problem = err.value.problems[0]
    assert says in problem.message and problem.line is not None and problem.line > 100


# -- 7. a definition file cannot exhaust the host --------------------------------------------
_BOMB = ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n"
    for i in range(7)) + "workflow: t\n")


@pytest.mark.parametrize(("text", "says"), [
    (_BOMB, "expands to more than"),
    ("a: &m {<<: *m}\nworkflow: t\n", "malformed YAML"),
    ("m: &m\n  k: *m\nworkflow: t\n", "m:"),
    ("x: " + "[" * 200 + "]" * 200 + "\n", "nested deeper"),
    ("f: 1\n" * 60_000, "keys and items"),
    ("workflow: t\n" + "# " + "x" * 600_000 + "\n", "bytes"),
])
def test_a_hostile_definition_file_is_refused_quickly_with_its_line(text: str, says: str) -> None:
    from casework import DefinitionError, parse_definition

    with pytest.raises(DefinitionError) as err:
        parse_definition(text, "hostile.yaml")
    assert says in str(err.value)
    assert all(p.file == "hostile.yaml" for p in err.value.problems)


def test_a_failed_timer_can_be_put_back_and_the_retry_is_recorded(
        any_engine: Engine, clock: FrozenClock) -> None:
    case = open_petition(any_engine)
    (timer,) = {t.id: t for t in any_engine.pending_timers(case.id)}.values()
    _sql(any_engine, "UPDATE timers SET payload = '{\"then\": \"broken\"}' WHERE id = :id",
         id=timer.id)
    clock.advance(days=30)
    assert any_engine.run_due().failed == 1
    assert [t.id for t in any_engine.failed_timers()] == [timer.id]
    _sql(any_engine, "UPDATE timers SET payload = '{\"deadline\": \"triage\", \"share\": 0.5}' "
                     "WHERE id = :id", id=timer.id)
    assert any_engine.retry_timer(timer.id, actor="supervisor:sun")
    retried = any_engine.history(case.id)[-1]
    assert (retried.name, retried.details["by"]) == ("timer_retried", "supervisor:sun")
    assert any_engine.failed_timers() == []
    assert any_engine.run_due().fired >= 1
    assert not any_engine.retry_timer(timer.id, actor="supervisor:sun")  # not failed any more
    assert any_engine.verify() == []


# -- notices kept with their events ------------------------------------------------------------
def test_with_durable_notices_a_refusing_subscriber_gets_each_notice_again_until_it_takes_it(
        db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    import time as _time

    heard: list[Any] = []
    fail = {"left": 2}

    def picky(notice: Any) -> None:
        if fail["left"]:
            fail["left"] -= 1
            raise RuntimeError("the receiver is down")
        heard.append(notice)

    with Engine(db_url, [PETITION], clock=clock, key_file=tmp_path / "k.key",
                durable_notices=True, scheduler={"notice_lease_seconds": 0.2}) as e:
        e.on("opened", picky, durable=True)
        case = open_petition(e)
        deadline = _time.monotonic() + 30
        while not heard and _time.monotonic() < deadline:
            clock.advance(seconds=1)  # the refused notices' lease runs out
            e.deliver_notices()
            _time.sleep(0.05)
        assert [n.case.id for n in heard] == [case.id]
