"""The benchmark harness (``python -m bench``) runs end to end at a tiny size and reports
every figure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.harness import main
from bench.workload import lifecycle

LEVEL_KEYS = {"engine_steps_per_s", "floor_tx_per_s", "ratio", "fire_p50_ms", "fire_p99_ms",
              "open_p50_ms"}
SPREAD_KEYS = {"median", "min", "max", "q1", "q3", "runs"}


def _positive_spread(s: dict[str, object]) -> None:
    assert set(s) >= SPREAD_KEYS
    for k in ("median", "min", "max", "q1", "q3"):
        v = s[k]
        assert isinstance(v, float) and v > 0, (k, v)


def test_suites_run_at_a_tiny_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    rc = main(["core", "memory", "bulk", "cold", "--cases", "5", "--repeat", "1",
               "--mem-sizes", "100,200", "--mem-picked", "20", "--bulk", "50",
               "--tmpdir", str(tmp_path), "--out", str(out), "--quiet"])
    assert rc == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert set(results) == {"meta", "core", "memory", "bulk", "cold"}
    assert {"date", "commit", "machine", "command"} <= set(results["meta"])
    core = results["core"]
    for level in ("sqlite_full", "sqlite_normal"):
        f = core[level]
        assert set(f) >= LEVEL_KEYS
        for k in LEVEL_KEYS:
            _positive_spread(f[k])
        assert f["transactions_per_run"] == 3 * 7 + 2 * 9  # cases 0 and 4 are unsatisfied once
        assert f["fire_p50_ms"]["median"] <= f["fire_p99_ms"]["median"]
    m = results["memory"]
    assert m["sizes"] == [100, 200]
    for size in ("small", "large"):
        _positive_spread(m[size]["peak_rss_mb"])
    _positive_spread(m["ratio"])
    assert all(p["chain_ok"] for ps in m["probes"].values() for p in ps)
    b = results["bulk"]
    assert b["cases"] == 50
    for k in ("engine_s", "engine_cases_per_s", "floor_s", "ratio"):
        _positive_spread(b[k])
    for k in ("validate_s", "bare_python_s"):
        _positive_spread(results["cold"][k])
    assert [t["name"] for t in core["targets"] + m["targets"]] == [
        "FULL engine/floor", "FULL fire p99 ms", "NORMAL engine/floor", "NORMAL fire p99 ms",
        "memory 200 / 100 cases"]
    assert all(isinstance(t["pass"], bool) for t in core["targets"] + m["targets"])
    printed = capsys.readouterr().out
    assert "engine / floor" in printed and "peak RSS" in printed
    assert "bulk import, 50 cases" in printed and "cold start" in printed


def test_page_counts_name_the_tables_each_step_writes(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    assert main(["pages", "--warm", "5", "--cases", "8", "--out", str(out), "-q"]) == 0
    figures = json.loads(out.read_text(encoding="utf-8"))["pages"]
    engine, floor = figures["engine"], figures["floor"]
    assert engine["steps"] == 8 + sum(len(lifecycle(i)) for i in range(5, 13))
    assert {"cases", "events"} <= set(engine["by_owner"]) and "timers" in engine["by_owner"]
    assert "timers" not in floor["by_owner"]
    assert engine["pages_per_step"] > floor["pages_per_step"] >= 2
    assert set(engine["by_step"]) >= {"open", "accept", "assign", "archive"}


def test_one_command_also_runs_the_peers_and_postgresql(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench`` runs everything: here at its smallest, without the slower SQLite parts."""
    out = tmp_path / "results.json"
    rc = main(["--quick", "--repeat", "1", "--cases", "4", "--skip", "memory,bulk,cold",
               "--tmpdir", str(tmp_path), "--out", str(out), "--quiet"])
    assert rc == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert set(results) == {"meta", "core", "peers", "pg"}
    peers = results["peers"]
    assert "casework" in peers["config"]["implementations"]
    assert {"sqlite_full", "sqlite_normal"} <= set(peers["figures"])
    pg = results["pg"]
    if "skipped" in pg:
        assert os.environ.get("CI") != "true", f"PostgreSQL is needed under CI: {pg['skipped']}"
    else:
        assert pg["targets"] and all(isinstance(t["pass"], bool) for t in pg["targets"])
    printed = capsys.readouterr().out
    assert "== peers" in printed and "casework (engine)" in printed and "PostgreSQL" in printed


@pytest.mark.parametrize(("args", "said"), [
    (["--cases", "0"], "argument --cases: must be at least 1, not 0"),
    (["--repeat", "-1"], "argument --repeat: must be at least 1, not -1"),
    (["--bulk", "-5"], "argument --bulk: must be at least 1, not -5"),
    (["--mem-picked", "x"], "argument --mem-picked: 'x' is not a whole number"),
    (["core", "nosuch"], "unknown suite nosuch"),
    (["--skip", "peer"], "unknown suite peer"),
])
def test_bad_counts_are_refused_naming_the_option_and_nothing_runs(
        args: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(out)])
    assert e.value.code == 2
    assert said in capsys.readouterr().err
    assert not out.exists()
