"""The ledger (個案臺帳): whole cases exported as JSON lines and imported elsewhere.

The source is the year-long demo (12 petition cases on SQLite); the target is
an empty database on SQLite and on PostgreSQL (``any_engine``). An import gives
identical case rows, histories (every event column, the hashes) and reports; a
file with anything wrong is refused whole and the target stays as it was.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from casework import Engine, FrozenClock, LedgerRefused
from casework.demo import DAYS, START, WORKFLOWS, run_demo

from tests.conftest import COMPLAINT, PETITION
from tests.helpers import count, row_dicts, run_cli

END = START + timedelta(days=DAYS)
UNIT = "county_court"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    run_demo(db, echo=lambda _: None)
    return db


@pytest.fixture
def office_key(demo_db: Path) -> Path:
    """The office's key file, which the demo created beside its database: the source and
    every target here belong to that office (ledgers of another office: test_integrity)."""
    key = Path(f"{demo_db}.key")
    assert key.exists()
    return key


@pytest.fixture
def source(demo_db: Path, office_key: Path, tmp_path: Path) -> Iterator[Engine]:
    """The demo's database at the end of its year (a copy: opening an engine writes to it),
    with its key beside it."""
    copy = tmp_path / "source.db"
    shutil.copy(demo_db, copy)
    shutil.copy(office_key, f"{copy}.key")
    with Engine(f"sqlite:///{copy}", WORKFLOWS, clock=FrozenClock(END)) as e:
        yield e


@pytest.fixture
def any_engine(db_url: str, clock: FrozenClock, office_key: Path) -> Iterator[Engine]:
    """A target of the same office on each backend in turn (an empty database)."""
    with Engine(db_url, [PETITION, COMPLAINT], clock=clock, key_file=office_key) as e:
        yield e


@pytest.fixture
def ledger(source: Engine) -> str:
    out = io.StringIO()
    assert source.export_cases(out) == 12
    return out.getvalue()


# -- reading both databases independently of the ledger's code --------------------------
def _rows(engine: Engine, name: str, /, *order: str, **where: Any) -> list[dict[str, Any]]:
    """The rows of table ``name`` as SQLAlchemy reads them (the same types from either
    database), without the databases' own row ids (events and timers)."""
    own_id = name in {"events", "timers"}
    return [{k: v for k, v in r.items() if not (own_id and k == "id")}
            for r in row_dicts(engine, name, *order, **where)]


def _cases(engine: Engine) -> list[dict[str, Any]]:
    return _rows(engine, "cases", "id")


def _events(engine: Engine) -> list[dict[str, Any]]:
    return _rows(engine, "events", "case_id", "seq")


def _pending(engine: Engine) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in {"claimed_by", "lease_until"}}
            for r in _rows(engine, "timers", "case_id", "due_at", status="pending")
            if r["case_id"] is not None]


def _counts(engine: Engine) -> dict[str, int]:
    """How many rows each table holds: the target must not change when a file is refused."""
    return {name: count(engine, name)
            for name in ("cases", "events", "timers", "workflow_versions")}


def _refused(target: Engine, text: str) -> list[str]:
    before = _counts(target)
    with pytest.raises(LedgerRefused) as e:
        target.import_cases(io.StringIO(text))
    assert "nothing was imported" in str(e.value)
    assert _counts(target) == before
    return e.value.problems


def _edit(text: str, n: int, change: Callable[[dict[str, Any]], object]) -> tuple[str, str]:
    """The ledger with case line ``n`` (1-based among the case lines) changed; that case's id."""
    lines = text.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith('{"case"')][n - 1]
    obj = json.loads(lines[at])
    change(obj)
    lines[at] = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return "\n".join(lines) + "\n", obj["case"]["id"]


def _line_of(text: str, case_id: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if f'"id":"{case_id}"' in line)


# -- the round trip ---------------------------------------------------------------------
def test_the_file_has_a_header_the_workflow_version_and_one_line_per_case(ledger: str) -> None:
    lines = [json.loads(line) for line in ledger.splitlines()]
    header = lines[0]
    assert (header["format"], header["version"], header["cases"]) == ("casework-ledger", 2, 12)
    assert header["exported_at"].startswith(END.date().isoformat())
    assert [list(x) for x in lines[1:2]] == [["workflow_version"]]
    assert lines[1]["workflow_version"]["name"] == "petition"
    assert all(set(x) == {"case", "events", "timers"} for x in lines[2:])
    assert len(lines) == 14
    first = lines[2]
    assert isinstance(first["case"]["data"], str)  # JSON columns as the stored text
    assert isinstance(first["events"][0]["changes"], str)
    assert len(first["events"][0]["at"]) == len("2026-01-05T01:00:00.000000")


def test_export_then_import_gives_identical_cases_histories_and_reports(
        source: Engine, any_engine: Engine, clock: FrozenClock, ledger: str) -> None:
    result = any_engine.import_cases(io.StringIO(ledger))
    n_cases, n_events = source.stored_counts()
    assert (result.cases, result.events, result.timers) == (n_cases, n_events, len(_pending(source)))
    assert result.workflow_versions == 0  # the target loads the same definitions
    assert _cases(any_engine) == _cases(source)
    assert _events(any_engine) == _events(source)  # every column, prev_hash and hash included
    assert _pending(any_engine) == _pending(source)
    for cid in result.case_ids:
        assert any_engine.history(cid) == source.history(cid)
        assert any_engine.get_case(cid) == source.get_case(cid)
    assert any_engine.verify() == []

    clock.set(END)
    assert any_engine.state_counts("petition") == source.state_counts("petition")
    names = Counter(e["name"] for e in _events(source))
    assert Counter(e["name"] for e in _events(any_engine)) == names
    if hasattr(Engine, "report"):
        for by in (None, "unit"):
            assert (any_engine.report("petition", start="2026-01-01", end="2027-01-01", by=by)
                    == source.report("petition", start="2026-01-01", end="2027-01-01", by=by))


def test_an_import_brings_the_workflow_versions_the_target_lacks(
        source: Engine, db_url: str, clock: FrozenClock, ledger: str, office_key: Path) -> None:
    with Engine(db_url, [], clock=clock, key_file=office_key) as target:  # no workflow loaded
        result = target.import_cases(io.StringIO(ledger))
        assert result.workflow_versions == 1
        assert _rows(target, "workflow_versions", "name") == _rows(
            source, "workflow_versions", "name", name="petition")
        assert target.verify() == []
        cid = result.case_ids[0]
        case = target.get_case(cid)
        assert target.workflow(case.workflow, case.version).version == case.version


def test_a_unit_filter_exports_only_that_units_cases(source: Engine, any_engine: Engine) -> None:
    out = io.StringIO()
    n = source.export_cases(out, unit=UNIT)
    mine = {c["id"] for c in _cases(source) if json.loads(c["data"]).get("unit") == UNIT}
    assert n == len(mine) == 3
    header, *rest = (json.loads(line) for line in out.getvalue().splitlines())
    assert header["filters"] == {"unit": UNIT} and header["cases"] == 3
    cases = [x["case"] for x in rest if "case" in x]
    assert {c["id"] for c in cases} == mine
    assert all(json.loads(c["data"])["unit"] == UNIT for c in cases)

    result = any_engine.import_cases(io.StringIO(out.getvalue()))
    assert set(result.case_ids) == mine
    assert {c["id"] for c in _cases(any_engine)} == mine

    empty = io.StringIO()
    assert source.export_cases(empty, workflow="complaint") == 0
    assert len(empty.getvalue().splitlines()) == 1
    assert any_engine.import_cases(io.StringIO(empty.getvalue())).cases == 0


def test_export_of_named_cases(source: Engine) -> None:
    ids = [c["id"] for c in _cases(source)][:2]
    out = io.StringIO()
    assert source.export_cases(out, case_ids=ids) == 2
    from casework import CaseNotFound

    with pytest.raises(CaseNotFound):
        source.export_cases(io.StringIO(), case_ids=["no-such-case"])


# -- refusals: the whole file, nothing written --------------------------------------------
def test_a_tampered_event_refuses_the_whole_file(any_engine: Engine, ledger: str) -> None:
    def tamper(obj: dict[str, Any]) -> None:
        obj["events"][3]["changes"] = '{"outcome":"withdrawn"}'
    text, cid = _edit(ledger, 5, tamper)
    assert _refused(any_engine, text) == [
        f"line {_line_of(text, cid)}: case {cid}: event 4 was altered (its content no longer "
        f"matches its hash)"]
    assert _cases(any_engine) == []


def test_a_deleted_event_refuses_the_whole_file(any_engine: Engine, ledger: str) -> None:
    text, cid = _edit(ledger, 2, lambda obj: obj["events"].pop(2))
    assert _refused(any_engine, text) == [
        f"line {_line_of(text, cid)}: case {cid}: event 3 is missing (deleted)"]
    text, cid = _edit(ledger, 2, lambda obj: obj["events"].pop())
    [problem] = _refused(any_engine, text)
    assert problem.startswith(f"line {_line_of(text, cid)}: case {cid}: event ")
    assert "is missing (deleted): the case's head is at event" in problem


def test_a_deleted_last_event_with_the_head_moved_back_is_refused(any_engine: Engine,
                                                                  ledger: str) -> None:
    """The chain alone cannot see it; the row version, state and data against the events do."""
    def cut(obj: dict[str, Any]) -> None:
        last = obj["events"].pop()
        obj["case"]["last_seq"] = last["seq"] - 1
        obj["case"]["last_hash"] = last["prev_hash"]
    text, cid = _edit(ledger, 1, cut)
    problems = _refused(any_engine, text)
    assert any(f"case {cid}: row version" in p and "does not match its" in p for p in problems)


def test_a_deleted_case_line_refuses_the_whole_file(any_engine: Engine, ledger: str) -> None:
    lines = ledger.splitlines()
    del lines[6]
    assert _refused(any_engine, "\n".join(lines)) == [
        "the header announces 12 cases, the file holds 11 (case lines were lost or added)"]


def test_reordered_events_refuse_the_whole_file(any_engine: Engine, ledger: str) -> None:
    def swap(obj: dict[str, Any]) -> None:
        ev = obj["events"]
        ev[3], ev[4] = ev[4], ev[3]
    text, cid = _edit(ledger, 3, swap)
    assert _refused(any_engine, text) == [
        f"line {_line_of(text, cid)}: case {cid}: event 4 comes after event 5: the events are out "
        f"of order"]

    def renumber(obj: dict[str, Any]) -> None:
        ev = obj["events"]
        ev[3]["seq"], ev[4]["seq"] = ev[4]["seq"], ev[3]["seq"]
    text, cid = _edit(ledger, 3, renumber)
    problems = _refused(any_engine, text)
    assert problems and all(f"case {cid}:" in p for p in problems)


def test_a_case_already_in_the_target_refuses_the_whole_file(source: Engine, any_engine: Engine,
                                                             ledger: str) -> None:
    unit = io.StringIO()
    source.export_cases(unit, unit=UNIT)
    there = any_engine.import_cases(io.StringIO(unit.getvalue())).case_ids
    problems = _refused(any_engine, ledger)
    assert sorted(problems) == sorted(
        f"line {_line_of(ledger, cid)}: case {cid} already exists in the target database"
        for cid in there)
    assert len(_cases(any_engine)) == 3


def test_every_problem_of_a_file_is_listed(any_engine: Engine, ledger: str) -> None:
    def data(obj: dict[str, Any]) -> None:
        obj["case"]["data"] = obj["case"]["data"].replace('"letter"', '"visit"')
    text, first = _edit(ledger, 1, data)

    def state(obj: dict[str, Any]) -> None:
        obj["case"]["state"] = "registered"
        obj["case"]["version"] = "000000000000"
    text, second = _edit(text, 2, state)
    text, third = _edit(text, 4, lambda obj: obj["events"][0].update(actor="mallory"))
    problems = _refused(any_engine, text)
    assert f"line {_line_of(text, first)}, case {first}: its data does not match the changes its " \
           f"events recorded (channel)" in problems
    assert any(p.startswith(f"line {_line_of(text, second)}, case {second}: state 'registered' is "
                            f"not the state its last event") for p in problems)
    assert (f"line {_line_of(text, third)}: case {third}: event 1 was altered (its content no "
            f"longer matches its hash)") in problems
    # The history on a version known neither to the file nor to the target cannot be
    # replayed against its rules.
    assert (f"line {_line_of(text, second)}: case {second}: workflow petition version "
            f"000000000000 is neither in the file nor in the target database: its history "
            f"cannot be checked") in problems
    assert len(problems) == 4

    text, cid = _edit(ledger, 2, lambda obj: obj["case"].update(version="000000000000"))
    assert _refused(any_engine, text) == [
        f"line {_line_of(text, cid)}: case {cid}: workflow petition version 000000000000 is "
        f"neither in the file nor in the target database: its history cannot be checked"]


def test_files_that_are_not_ledgers_are_refused(any_engine: Engine, ledger: str) -> None:
    assert _refused(any_engine, "") == ["the file is empty (no ledger header)"]
    assert _refused(any_engine, '{"hello": 1}\n')[0].startswith("line 1: not a casework ledger")
    newer = ledger.replace('"version":2,', '"version":3,', 1)
    assert _refused(any_engine, newer) == [
        "line 1: ledger format version 3; this code reads versions 1, 2"]
    lines = ledger.splitlines()
    lines[3] = lines[3][:100]
    assert _refused(any_engine, "\n".join(lines))[0].startswith("line 4: not JSON")
    text, cid = _edit(ledger, 1, lambda obj: obj["case"].update(final="yes", colour="red"))
    assert sorted(_refused(any_engine, text)) == [
        f"line 3, case {cid}: final 'yes' is not true or false",
        f"line 3, case {cid}: unknown field colour"]


# -- after the import: the target's scheduler keeps every timer ---------------------------
def test_imported_histories_never_take_the_keys_of_the_targets_timers(
        any_engine: Engine, clock: FrozenClock, ledger: str) -> None:
    """Scheduler keys name the case, the timer and its due instant, not a row id: after an
    import the target's own cron checks do not repeat a check the source already made on an
    imported case at the same instant, nothing is lost or stuck, and the imported
    return-visit cycle writes its events when it comes round."""
    any_engine.import_cases(io.StringIO(ledger))
    overdue = [c["id"] for c in _cases(any_engine) if c["overdue_since"] and not c["final"]]
    assert overdue
    clock.set(START.replace(year=2027, month=6, day=1, hour=1))
    any_engine.run_due()
    for cid in overdue:
        dues = [e.details["due"] for e in any_engine.history(cid)
                if e.name == "campaign_daily_check"]
        assert dues and len(dues) == len(set(dues)), cid  # checked once per instant
    assert not [t for t in any_engine.pending_timers(overdue[0])
                if t.due_at <= clock.now()]
    cycling = [c for c in _cases(any_engine) if c["state"] == "follow_up.continued_work"]
    assert cycling and any(e.name == "return_visits" and e.at.year == 2027
                           for e in any_engine.history(cycling[0]["id"]))
    keys = [e["idempotency_key"] for e in _events(any_engine) if e["idempotency_key"]]
    assert len(keys) == len(set(keys))
    assert any_engine.verify() == []


# -- the command line -------------------------------------------------------------------
def test_cli_export_and_import(source: Engine, tmp_path: Path) -> None:
    src = source.database_url
    target = f"sqlite:///{tmp_path / 'target.db'}"
    shutil.copy(source.database_url.removeprefix("sqlite:///") + ".key", tmp_path / "target.db.key")
    out = tmp_path / "ledger" / "county_court.jsonl"
    code, said, _ = run_cli("--db", src, "export", "--unit", UNIT, "--out", str(out))
    assert (code, said) == (0, f"wrote 3 cases to {out}\n")
    code, said, _ = run_cli("--db", target, "import", str(out))
    assert code == 0
    assert said.startswith("imported 3 cases with ") and "pending timer" in said
    code, _, err = run_cli("--db", target, "import", str(out))
    assert code == 1
    assert "refused and nothing was imported (3 problems)" in err
    assert err.count("already exists in the target database") == 3
    code, said, _ = run_cli("--db", target, "verify")
    assert code == 0 and said.startswith("3 cases, ")

    code, said, err = run_cli("--db", src, "export", "--workflow", "petition")
    assert code == 0
    assert json.loads(said.splitlines()[0])["cases"] == 12 and len(said.splitlines()) == 14
    assert "exported 12 cases" in err


def test_a_field_of_the_wrong_type_is_refused_naming_it(any_engine: Engine, ledger: str) -> None:
    text, cid = _edit(ledger, 1, lambda obj: obj["case"].update(state=5, workflow="w" * 65))
    problems = _refused(any_engine, text)
    where = f"line {_line_of(text, cid)}, case {cid}"
    assert f"{where}: state 5 is not text" in problems
    assert f"{where}: workflow is longer than 64 characters" in problems


def test_a_version_1_ledger_with_a_row_per_timer_instant_is_still_read(
        any_engine: Engine, tmp_path: Path, office_key: Path) -> None:
    """Before chained deadline timers a ledger held one timer row per instant (version 1)."""
    with Engine(f"sqlite:///{tmp_path / 'old.db'}", WORKFLOWS, key_file=office_key,
                clock=FrozenClock(START)) as old:
        for _ in range(2):
            old.open_case("petition", {"petitioner_name": "A", "channel": "visit",
                                       "source": "city", "summary": "s"}, actor="clerk:li")
        buf = io.StringIO()
        old.export_cases(buf)
    lines = buf.getvalue().splitlines()
    out = [json.dumps({**json.loads(lines[0]), "version": 1})]
    instants = 0
    for line in lines[1:]:
        obj = json.loads(line)
        if "case" in obj:
            unchained = []
            for t in obj["timers"]:
                payload = json.loads(t["payload"])
                then = payload.pop("then", [])
                unchained.append({**t, "payload": json.dumps(payload)})
                unchained += [{**t, "kind": i["kind"], "due_at": _naive_iso(i["at"]),
                               "payload": json.dumps(i["payload"])} for i in then]
            obj["timers"] = unchained
            instants += len(unchained)
        out.append(json.dumps(obj))
    assert instants == 2 * 3  # triage's two warnings and its breach, for each case
    result = any_engine.import_cases(io.StringIO("\n".join(out) + "\n"))
    assert (result.cases, result.timers) == (2, 6)
    case_id = result.case_ids[0]
    assert [t.kind for t in any_engine.pending_timers(case_id)] == ["warning", "warning", "breach"]


def _naive_iso(aware: str) -> str:
    """An aware ISO time as the ledger stores times: naive UTC, microseconds."""
    from datetime import UTC, datetime

    return datetime.fromisoformat(aware).astimezone(UTC).replace(tzinfo=None).isoformat(
        timespec="microseconds")
