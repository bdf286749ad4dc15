"""``core``: engine steps/s at ``synchronous=FULL`` and ``NORMAL`` beside the raw sqlite3
floor, and the latency of one ``fire`` (p50, p99), from the same runs."""

from __future__ import annotations

from typing import Any

from .base import Ctx, Table, percentile, ratios, rotated, spread, target
from .workload import Run, run_engine, run_floor, steps_of

LEVELS = ("FULL", "NORMAL")
RATIO_TARGET = {"FULL": 0.5, "NORMAL": 0.2}  # judged on the medians
P99_TARGET_MS = 5.0
WARMUP = 5


def _level(engine_runs: list[Run], floor_runs: list[Run]) -> dict[str, Any]:
    def ms(p: float, attr: str) -> dict[str, Any]:
        return spread([percentile(getattr(r, attr), p) * 1000.0 for r in engine_runs])

    return {
        "engine_steps_per_s": spread([r.steps_per_s for r in engine_runs]),
        "floor_tx_per_s": spread([r.steps_per_s for r in floor_runs]),
        "ratio": ratios([r.steps_per_s for r in engine_runs], [r.steps_per_s for r in floor_runs]),
        "fire_p50_ms": ms(50, "fire_latencies"),
        "fire_p99_ms": ms(99, "fire_latencies"),
        "open_p50_ms": ms(50, "open_latencies"),
        "transactions_per_run": engine_runs[0].steps,
        "fires_per_run": len(engine_runs[0].fire_latencies),
    }


def run(ctx: Ctx) -> dict[str, Any]:
    """Engine and floor runs at each synchronous level, alternating which goes first."""
    cases, repeat = ctx.cases(300, 30), ctx.repeat(5)
    engine_runs: dict[str, list[Run]] = {lv: [] for lv in LEVELS}
    floor_runs: dict[str, list[Run]] = {lv: [] for lv in LEVELS}
    for rep in range(repeat):
        for level in LEVELS:
            for which in rotated(("engine", "floor"), rep):
                if which == "engine":
                    e = run_engine(ctx.work / f"engine-{level}.db", level, cases, WARMUP)
                    engine_runs[level].append(e)
                    ctx.progress(f"run {rep + 1}/{repeat} {level:<6} engine {e.steps_per_s:8.0f} "
                                 f"steps/s  p99 {percentile(e.fire_latencies, 99) * 1000:.2f} ms")
                else:
                    f = run_floor(ctx.work / f"floor-{level}.db", level, cases, WARMUP)
                    floor_runs[level].append(f)
                    ctx.progress(f"run {rep + 1}/{repeat} {level:<6} floor  {f.steps_per_s:8.0f} tx/s")
    out: dict[str, Any] = {f"sqlite_{lv.lower()}": _level(engine_runs[lv], floor_runs[lv])
                           for lv in LEVELS}
    steps = [steps_of(i) for i in range(cases)]
    out["config"] = {"cases": cases, "repeat": repeat, "warmup_cases": WARMUP,
                     "steps_per_case": sum(steps) / len(steps)}
    out["targets"] = []
    for level in LEVELS:
        f = out[f"sqlite_{level.lower()}"]
        r, p99 = f["ratio"]["median"], f["fire_p99_ms"]["median"]
        out["targets"] += [
            target(f"{level} engine/floor", r, f">= {RATIO_TARGET[level]}", r >= RATIO_TARGET[level]),
            target(f"{level} fire p99 ms", p99, f"< {P99_TARGET_MS}", p99 < P99_TARGET_MS)]
    return out


def table(res: dict[str, Any]) -> Table:
    cfg, full = res["config"], res["sqlite_full"]
    t = Table([f"{cfg['cases']} petition cases x {cfg['steps_per_case']:.2f} steps "
               f"= {full['transactions_per_run']} transactions per run "
               f"({full['fires_per_run']} fires), {cfg['repeat']} runs each; "
               f"WAL; one transaction per step"])
    for level in LEVELS:
        f = res[f"sqlite_{level.lower()}"]
        t.add(f"{level}: engine, steps/s", f["engine_steps_per_s"])
        t.add(f"{level}: raw sqlite3 floor, tx/s", f["floor_tx_per_s"])
        t.add(f"{level}: engine / floor", f["ratio"], "", f"{level} engine/floor")
        t.add(f"{level}: fire p50", f["fire_p50_ms"], "ms")
        t.add(f"{level}: fire p99", f["fire_p99_ms"], "ms", f"{level} fire p99 ms")
    return t
