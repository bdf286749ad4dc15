"""Property: whatever commands arrive in whatever order, a petition case stays consistent.

Random sequences of every petition trigger and activity, by random actors with
random roles, with plausible input (valid enum values, sometimes a required
field left out), and with the clock moving. Refusals are expected; after each
refusal the case must be exactly as before, and after each sequence the case
must sit in a leaf state with a gapless, intact event chain.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from casework import CommandRefused, Engine, FrozenClock, load_definition
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.petition_steps import OPEN_DATA, snapshot

PETITION = Path(__file__).resolve().parent.parent / "workflows" / "petition.yaml"
SPEC = load_definition(PETITION).spec
ROLES = tuple(SPEC.roles)
PEOPLE = ("chen", "wu", "ma")  # the leader named in the four fixes is one of these

# Plausible values for the input fields, by declared type; a few fields get
# values that make the guards interesting (people who may be the leader, days
# around the 30-day limit, amounts around zero).
SPECIAL: dict[str, st.SearchStrategy[Any]] = {
    "leader": st.sampled_from(PEOPLE),
    "handler": st.sampled_from(PEOPLE),
    "visitor": st.sampled_from(PEOPLE),
    "extension_days": st.integers(min_value=-2, max_value=40),
    "amount": st.sampled_from([0, 500.0, 20000]),
    "attendees": st.lists(st.sampled_from(["court", "police", "township"]), max_size=3),
}


def _values_for(spec: Any) -> st.SearchStrategy[Any]:
    t = spec.type.value
    if t == "enum":
        return st.sampled_from(list(spec.values))
    return {
        "string": st.sampled_from(["a", "county court"]),
        "text": st.sampled_from(["noted", "a longer note"]),
        "int": st.integers(min_value=0, max_value=40),
        "number": st.sampled_from([0, 1.5, 1000]),
        "bool": st.booleans(),
        "date": st.sampled_from(["2026-03-01", "2026-04-15"]),
        "datetime": st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T12:00:00Z"]),
        "list": st.lists(st.sampled_from(["x", "y"]), max_size=3),
    }[t]


def _inputs() -> dict[str, dict[str, st.SearchStrategy[Any]]]:
    """For each trigger and activity: the input it takes, with a strategy per field.

    A transition gets its required fields; an activity all of its own fields.
    """
    spec = SPEC
    out: dict[str, dict[str, st.SearchStrategy[Any]]] = {}
    for t in spec.transitions:
        fields = out.setdefault(t.trigger, {})
        for f in t.required:
            fields[f] = SPECIAL[f] if f in SPECIAL else _values_for(spec.fields[f])
    for name, a in spec.activities.items():
        out[name] = {f: SPECIAL[f] if f in SPECIAL else _values_for(fs)
                     for f, fs in a.fields.items()}
    return out


INPUTS = _inputs()


def _allowed_roles() -> dict[str, tuple[str, ...]]:
    spec = SPEC
    out: dict[str, set[str]] = {}
    for t in spec.transitions:
        out.setdefault(t.trigger, set()).update(t.roles)
    for name, a in spec.activities.items():
        out[name] = set(a.roles)
    return {k: tuple(sorted(v or ROLES)) for k, v in out.items()}


ALLOWED_ROLES = _allowed_roles()


def _under(state: str, source: str) -> bool:
    """Whether ``source`` (a leaf or a compound state) covers the leaf ``state``."""
    return state == source or state.startswith(source + ".")


def draw_command(data: st.DataObject, engine: Engine, case_id: str,
                 state: str) -> tuple[str, str, dict]:
    """A trigger, an actor and input; mostly something that could apply in ``state``."""
    wf = engine.workflow("petition")
    # What could apply here (every option the case offers, allowed or not), the ways onward
    # (to a non-final state) weighted up so that sequences get past triage and reach the
    # later stages.
    offered = {o.name for o in engine.available_triggers(case_id, "clerk:anyone")}
    onward = sorted({t.trigger for t in wf.definition.transitions
                     if t.trigger in offered and t.dest not in wf.final_states
                     and any(_under(state, s) for s in t.source)})
    here = sorted(offered)
    here += onward * 4
    if here and data.draw(st.integers(0, 4), label="pick") > 0:
        trigger = data.draw(st.sampled_from(here), label="trigger")
    else:
        trigger = data.draw(st.sampled_from(sorted(INPUTS)), label="any trigger")
    roles = set(data.draw(st.lists(st.sampled_from(ROLES), max_size=2, unique=True),
                          label="roles"))
    if data.draw(st.integers(0, 3), label="fitting role") > 0:
        roles.add(data.draw(st.sampled_from(ALLOWED_ROLES[trigger]), label="role"))
    actor = f"{','.join(sorted(roles))}:{data.draw(st.sampled_from(PEOPLE), label='who')}"
    values: dict[str, Any] = {}
    for f, strategy in INPUTS[trigger].items():
        if data.draw(st.integers(0, 7), label=f"give {f}") > 0:  # now and then one is left out
            values[f] = data.draw(strategy, label=f)
    return trigger, actor, values


@pytest.fixture(scope="module")
def prop_engine() -> Iterator[tuple[Engine, FrozenClock]]:
    clock = FrozenClock()
    with tempfile.TemporaryDirectory() as d, \
            Engine(f"sqlite:///{d}/props.db", [PETITION], clock=clock,
                   sqlite_synchronous="NORMAL") as engine:
        yield engine, clock


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), length=st.integers(min_value=1, max_value=25))
def test_random_command_sequences_keep_the_case_consistent(
        prop_engine: tuple[Engine, FrozenClock], data: st.DataObject, length: int) -> None:
    engine, clock = prop_engine
    wf = engine.workflow("petition")
    leaves = set(wf.states)
    case = engine.open_case("petition", OPEN_DATA, actor="clerk:li")
    applied = 1
    for _ in range(length):
        if data.draw(st.integers(0, 9), label="advance?") == 0:
            clock.advance(days=data.draw(st.integers(0, 40), label="days"))
            continue
        before = snapshot(engine, case.id)
        trigger, actor, values = draw_command(data, engine, case.id, before.state)
        try:
            after = engine.fire(case.id, trigger, actor=actor, data=values)
        except CommandRefused as e:
            event(f"refused: {e.rule}")
            assert snapshot(engine, case.id) == before, f"refused {trigger} changed the case"
            continue
        applied += 1
        assert after.row_version == before.row_version + 1
        assert after.state in leaves
        if trigger in wf.activities:
            assert after.state == before.state

    final = engine.get_case(case.id)
    event(f"ended in {final.state}")
    history = engine.history(case.id)
    assert final.state in leaves
    assert final.final == (final.state in wf.final_states)
    assert [e.seq for e in history] == list(range(1, applied + 1))
    assert final.row_version == applied
    assert history[-1].to_state == final.state
    assert all(a.to_state == b.from_state for a, b in pairwise(history))
    assert engine.verify(case.id) == []
    # Domain rules that no sequence of commands may break.
    if final.state == "archived":
        assert final.data["satisfaction"] == "satisfied"
    extensions = [e for e in history if e.name == "extend"]
    assert len(extensions) <= 1
    for e in extensions:
        assert 1 <= e.changes["extension_days"] <= 30
        assert e.actor == final.data["leader"]
