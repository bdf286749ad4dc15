"""Attacks on the maintained report figures: sequences after which the report read from
the figures must still be the report counted from the events, and a check of the
figures must find no difference."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from casework import CaseworkError, Engine, FrozenClock
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.conftest import (
    PETITION,
    assert_figures_intact,
    assert_reports_agree,
    new_pg_schema,
)
from tests.petition_steps import (
    CLERK,
    LEADER,
    OPEN_DATA,
    STANDARD,
    SUPERVISOR,
    run,
)

# Sunday 27 September 2026, 15:30 UTC: 23:30 in Beijing, half an hour before local midnight.
START = datetime(2026, 9, 27, 15, 30, tzinfo=UTC)

KWS: list[dict[str, Any]] = [
    {}, {"by": "unit"}, {"by": "source"}, {"by": "leader"}, {"by": "concerns"},
    {"start": "2026-09-28", "end": "2026-09-29"}, {"start": "2026-09-27", "end": "2026-10-09"},
    {"end": "2026-09-28"}, {"end": "2026-10-02", "by": "unit"}, {"start": "2026-09-28"},
    {"start": "2026-10-01", "by": "source"},
]


def agree_everywhere(e: Engine) -> None:
    for kw in KWS:
        assert_reports_agree(e, "petition", **kw)
    assert_figures_intact(e)



TYPED = """\
workflow: typed
roles: [desk]
fields:
  score: {type: number}
  tags: {type: list}
open:
  roles: [desk]
  optional: [score, tags]
initial: open
states:
  open: {}
  done: {final: true}
transitions:
  - {trigger: change, source: open, dest: open, roles: [desk], optional: [score, tags]}
  - {trigger: close, source: open, dest: done, roles: [desk]}
activities:
  poke:
    states: [open]
    roles: [desk]
    fields:
      label: {type: string}
      yes: {type: bool}
timezone: Asia/Shanghai
report:
  by: [score, tags]
  figures:
    opened: {count: cases}
    labels: {sum: label, name: poke}
    yeses: {sum: yes, name: poke}
"""


def _typed(tmp_path: Path, db_url: str) -> Engine:
    (tmp_path / "typed.yaml").write_text(TYPED, encoding="utf-8")
    return Engine(db_url, [tmp_path / "typed.yaml"], clock=FrozenClock(START),
                  key_file=tmp_path / "k")


def _typed_agree(e: Engine) -> None:
    for kw in ({}, {"by": "score"}, {"by": "tags"}):
        assert_reports_agree(e, "typed", **kw)
    assert_figures_intact(e)


@pytest.mark.parametrize("data", [
    {"score": 1e-05}, {"score": 1e16}, {"score": -0.0},
    {"tags": [{"b": 1, "a": 2}]}, {"tags": [{"aa": 1, "b": 2}]}, {"tags": [1.5e-7, 2.0]},
], ids=["tiny-number", "huge-number", "negative-zero", "object-keys", "jsonb-key-order",
        "exponent-in-list"])
def test_a_breakdown_value_that_is_not_text_is_grouped_as_the_database_reads_it(
        db_url: str, tmp_path: Path, data: dict[str, Any]) -> None:
    with _typed(tmp_path, db_url) as e:
        e.open_case("typed", data, actor="desk:a")
        _typed_agree(e)


@pytest.mark.parametrize("old,new", [([1], [1.0]), ([1], [True]), ([0], [False])])
def test_a_breakdown_value_equal_in_python_but_not_in_json_moves_the_case(
        db_url: str, tmp_path: Path, old: list[Any], new: list[Any]) -> None:
    with _typed(tmp_path, db_url) as e:
        cid = e.open_case("typed", {"tags": old}, actor="desk:a").id
        e.fire(cid, "change", actor="desk:a", data={"tags": new})
        e.fire(cid, "poke", actor="desk:a", data={})
        _typed_agree(e)


def test_a_sum_over_a_field_that_is_not_a_number_adds_nothing_on_either_side(
        db_url: str, tmp_path: Path) -> None:
    with _typed(tmp_path, db_url) as e:
        cid = e.open_case("typed", {}, actor="desk:a").id
        e.fire(cid, "poke", actor="desk:a", data={"label": "12", "yes": True})
        _typed_agree(e)
        assert e.report("typed", source="events").totals["labels"] == 0


def _changed_report(tmp_path: Path) -> Path:
    changed = tmp_path / "petition.yaml"
    text = PETITION.read_text(encoding="utf-8")
    changed.write_text(text.replace("  figures:\n", "  figures:\n"
                                    "    assigned: {count: events, name: assign}\n"),
                       encoding="utf-8")
    return changed


def test_a_rebuild_by_another_engine_is_followed_at_once_by_an_engine_that_saw_them_unbuilt(
        db_url: str, tmp_path: Path) -> None:
    clock = FrozenClock(START)
    key = tmp_path / "k"
    with Engine(db_url, [PETITION], clock=clock, key_file=key) as e:
        e.open_case("petition", OPEN_DATA, actor=CLERK)
    changed = _changed_report(tmp_path)
    with Engine(db_url, [changed], clock=clock, key_file=key) as server:
        cid = server.open_case("petition", OPEN_DATA, actor=CLERK).id  # figures not built
        with Engine(db_url, [changed], clock=clock, key_file=key) as operator:
            operator.rebuild_figures()  # casework rebuild-figures, another process
        run(server, cid, "accept")
        server.open_case("petition", OPEN_DATA, actor=CLERK)
        assert_reports_agree(server, "petition")
        assert_figures_intact(server)


def test_an_engine_on_the_old_report_definition_marks_the_new_ones_figures_stale(
        db_url: str, tmp_path: Path) -> None:
    clock = FrozenClock(START)
    key = tmp_path / "k"
    with Engine(db_url, [PETITION], clock=clock, key_file=key) as old:
        cid = old.open_case("petition", OPEN_DATA, actor=CLERK).id
        with Engine(db_url, [_changed_report(tmp_path)], clock=clock, key_file=key) as new:
            new.rebuild_figures()
            assert new.report("petition").source == "figures"
            run(old, cid, "accept")  # under its own rules: the new figures cannot hold it
            run(old, cid, "assign")
            rep = new.report("petition")
            assert rep.source == "events" and "two report definitions" in rep.note
            assert rep.totals["assigned"] == 1
            [check] = new.rebuild_figures(check=True)
            assert not check.ok
            new.rebuild_figures()
            assert_reports_agree(new, "petition")
            assert_figures_intact(new)


def test_the_figures_are_not_read_once_the_working_day_calendar_changed(
        db_url: str, tmp_path: Path) -> None:
    clock = FrozenClock(START)
    key = tmp_path / "k"
    with Engine(db_url, [PETITION], clock=clock, key_file=key) as e:
        cid = e.open_case("petition", OPEN_DATA, actor=CLERK).id
        clock.advance(timedelta(days=10))  # over National Day, days off on cn_workdays
        run(e, cid, "not_accept")
        assert_reports_agree(e, "petition")
    with Engine(db_url, [PETITION], clock=clock, key_file=key,
                calendars={"petition": "weekdays"}) as e:
        assert e.report("petition").resolution == e.report("petition", source="events").resolution
        e.rebuild_figures()
        assert_reports_agree(e, "petition")
        assert_figures_intact(e)


# -- a random walk over the petition workflow, checked after each step --------------------

STEPS = sorted(STANDARD)
UNITS = ("police", "court", None)
SOURCES = ("central", "direct", "carried_over")


class Petitions(RuleBasedStateMachine):
    """Opens, commands (often refused), activities, assignments, timers and the clock moving
    across local midnights; the figures must agree with the events after every step."""

    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FrozenClock(START)
        self.dir = tempfile.mkdtemp()
        url = self.url or f"sqlite:///{self.dir}/cases.db"
        self.e = Engine(url, [PETITION], clock=self.clock, key_file=Path(self.dir) / "k")
        self.ids: list[str] = []

    def teardown(self) -> None:
        self.e.close()

    @initialize(source=st.sampled_from(SOURCES))
    def first(self, source: str) -> None:
        self.open(source, "court", False)

    @rule(source=st.sampled_from(SOURCES), concerns=st.sampled_from(["court", "police"]),
          head=st.booleans())
    def open(self, source: str, concerns: str, head: bool) -> None:
        data = {**OPEN_DATA, "source": source, "concerns": concerns, "received_by_head": head}
        self.ids.append(self.e.open_case("petition", data, actor=CLERK).id)

    @precondition(lambda self: self.ids)
    @rule(i=st.integers(0, 50), step=st.sampled_from(STEPS),
          unit=st.sampled_from(UNITS), leader=st.sampled_from(["chen", "ma"]))
    def fire(self, i: int, step: str, unit: str | None, leader: str) -> None:
        cid = self.ids[i % len(self.ids)]
        extra: dict[str, Any] = {}
        if step == "assign":
            extra = {"leader": leader, **({"unit": unit} if unit else {})}
        try:
            run(self.e, cid, step, **extra)
        except CaseworkError:
            pass

    @precondition(lambda self: self.ids)
    @rule(i=st.integers(0, 50), name=st.sampled_from(["home_visit", "funds_raised",
                                                      "coordination_meeting", "flag_persistent"]),
          amount=st.sampled_from([1.0, 250.5]))
    def activity(self, i: int, name: str, amount: float) -> None:
        cid = self.ids[i % len(self.ids)]
        data = {"home_visit": {"visitor": "chen"}, "funds_raised": {"amount": amount},
                "coordination_meeting": {"attendees": ["court", "police"], "agreed": "x"},
                "flag_persistent": {"reason": "again"}}[name]
        actor = SUPERVISOR if name == "flag_persistent" else LEADER
        try:
            self.e.fire(cid, name, actor=actor, data=data)
        except CaseworkError:
            pass

    @precondition(lambda self: self.ids)
    @rule(i=st.integers(0, 50), unit=st.sampled_from(["police", "court", "township"]))
    def reassign(self, i: int, unit: str) -> None:
        try:
            self.e.assign(self.ids[i % len(self.ids)], "lead_unit", unit, actor=LEADER,
                          reason="moved")
        except CaseworkError:
            pass

    @rule(hours=st.sampled_from([0.25, 1, 7, 23.5, 24 * 16, 24 * 61]))
    def later(self, hours: float) -> None:
        self.clock.advance(timedelta(hours=hours))
        self.e.run_due()

    @invariant()
    def figures_agree(self) -> None:
        if self.ids:
            agree_everywhere(self.e)


SETTINGS = settings(max_examples=6, stateful_step_count=10, deadline=None,
                    suppress_health_check=list(HealthCheck))


def test_random_walks_keep_the_figures_the_events_give_sqlite() -> None:
    Petitions.url = ""
    Petitions.TestCase.settings = SETTINGS
    Petitions.TestCase().runTest()


def test_random_walks_keep_the_figures_the_events_give_postgresql(pg_database: str) -> None:
    Petitions.url = new_pg_schema(pg_database)  # each run starts a new schema below

    class OnPg(Petitions):
        def __init__(self) -> None:
            Petitions.url = new_pg_schema(pg_database)
            super().__init__()

    OnPg.TestCase.settings = SETTINGS
    OnPg.TestCase().runTest()
