"""The peer benchmarks (``python -m bench peers``) run end to end at a tiny size.

Each peer drives a few petitions to the archive and refuses what casework refuses (wrong
state, wrong role, missing input, a false guard) without writing anything. A peer whose
package is not installed is skipped: the peers are the optional ``bench`` group.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from bench.harness import main
from bench.peers.common import PeerFactory, Refused, run_peer
from bench.workload import steps_of
from tests.petition_steps import ARCHIVIST, CLERK, FOUR_FIXES, HANDLER, LEADER, OPEN_DATA, TRIAGE

# name -> (the package it needs, its module under bench.peers, its factory)
PEERS = {
    "django-fsm-2": ("django_fsm", "django_peer", "make"),
    "django-fsm-2-columns": ("django_fsm", "django_peer", "make_columns"),
    "python-statemachine": ("statemachine", "statemachine_peer", "make"),
    "transitions": ("transitions", "transitions_peer", "make"),
    "transitions-shared": ("transitions", "transitions_peer", "make_shared"),
    "spiffworkflow": ("SpiffWorkflow", "spiff_peer", "make"),
}


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


@pytest.fixture(params=list(PEERS))
def peer(request: pytest.FixtureRequest) -> tuple[str, PeerFactory]:
    name = request.param
    package, module, make = PEERS[name]
    pytest.importorskip(package)
    mod = importlib.import_module(f"bench.peers.{module}")
    factory: PeerFactory = getattr(mod, make)
    return name, factory


def test_peer_drives_cases_to_the_archive(peer: tuple[str, PeerFactory], tmp_path: Path) -> None:
    name, factory = peer
    run = run_peer(name, factory, tmp_path / "peer.db", "NORMAL", 3, warmup=1)
    steps = sum(steps_of(i) for i in range(3))  # case 0 is unsatisfied once: 9 + 7 + 7
    assert run.steps == steps == 23
    assert run.check == {"cases": 4, "final": 4, "history": steps + steps_of(0)}
    assert run.steps_per_s > 0


def test_peer_refuses_what_casework_refuses(peer: tuple[str, PeerFactory],
                                            tmp_path: Path) -> None:
    _, factory = peer
    p = factory(tmp_path / "refusals.db", "FULL")
    try:
        cid = p.open_case(OPEN_DATA, CLERK)
        with pytest.raises(Refused):
            p.fire(cid, "archive", ARCHIVIST, {})  # wrong state
        with pytest.raises(Refused):
            p.fire(cid, "accept", HANDLER, {})  # wrong role
        p.fire(cid, "accept", TRIAGE, {})
        with pytest.raises(Refused):
            p.fire(cid, "assign", LEADER, {**FOUR_FIXES, "unit": ""})  # missing input
        with pytest.raises(Refused):
            p.fire(cid, "assign", LEADER, {**FOUR_FIXES, "unit": 0})  # the four-fixes guard
        with pytest.raises(Refused):
            p.fire(cid, "assign", LEADER, {**FOUR_FIXES, "colour": "red"})  # not an input
        p.fire(cid, "assign", LEADER, dict(FOUR_FIXES))
        p.fire(cid, "decide", HANDLER, {"outcome": "explanation", "decision_summary": "s"})
        p.fire(cid, "reply", HANDLER, {"reply_summary": "r"})
        with pytest.raises(Refused):
            p.fire(cid, "return_visit", HANDLER, {"satisfaction": "so-so"})  # not an enum value
        p.fire(cid, "return_visit", HANDLER, {"satisfaction": "unsatisfied"})
        with pytest.raises(Refused):
            p.fire(cid, "archive", ARCHIVIST, {})  # guard: not satisfied
        p.fire(cid, "continue_work", HANDLER, {})
        p.fire(cid, "return_visit", HANDLER, {"satisfaction": "satisfied"})
        with pytest.raises(Refused):
            p.fire(cid, "continue_work", HANDLER, {})  # guard: satisfied
        p.fire(cid, "archive", ARCHIVIST, {})
        # The refused commands wrote nothing: open + 8 steps.
        assert p.check() == {"cases": 1, "final": 1, "history": 9}
    finally:
        p.close()


def test_runner_writes_the_table_and_json(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    rc = main(["peers", "--cases", "2", "--repeat", "1", "--footprint-cases", "1", "--tmpdir",
               str(tmp_path), "--out", str(out), "--quiet"])
    assert rc == 0
    results = json.loads(out.read_text(encoding="utf-8"))["peers"]
    assert {"config", "figures", "footprint", "targets", "skipped"} <= set(results)
    installed = {n for n, (pkg, _, _) in PEERS.items()
                 if n not in ("django-fsm-2-columns", "transitions-shared") and _importable(pkg)}
    assert set(results["skipped"]) == {"django-fsm-2", "python-statemachine", "transitions",
                                       "spiffworkflow"} - installed
    for level in ("sqlite_full", "sqlite_normal"):
        f = results["figures"][level]
        assert set(f) == {"casework", "floor"} | installed
        for name, fig in f.items():
            assert fig["steps_per_s"]["median"] > 0
            if name != "casework":
                assert fig["casework_ratio"]["median"] > 0
    assert set(results["footprint"]) == {"casework"} | installed
    assert results["footprint"]["casework"]["rows_per_case"]["events"] == 8.0  # 9 + 7 over 2
    assert len(results["targets"]) == 2 * len(installed)
    assert all(isinstance(t["pass"], bool) for t in results["targets"])
    printed = capsys.readouterr().out
    assert "casework (engine)" in printed and "synchronous=NORMAL" in printed
