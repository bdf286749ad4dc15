"""``memory``: the engine's memory against the number of stored cases (``bench/README.md``).

:func:`prefill` makes a database of N petitions in ``handling.investigating``: one template
case through the engine, its rows copied N-1 times with ``sqlite3`` ``executemany`` under
new ids, each copy's chain made by :func:`bench.db.chain`, so every copy is a valid case.
:func:`probe` (run as ``python -m bench.memory DB PICKED SLOT SLOTS``, a fresh process)
builds an engine on it, fires a few hundred commands on random cases and prints its RSS
as JSON: the engine keeps no per-case state, so the RSS must not grow with stored cases.
"""

from __future__ import annotations

import json
import random
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from casework import Engine

from tests.petition_steps import LEADER, case_in

from .base import Ctx, Table, ratios, rotated, spread, target
from .db import PETITION, ROOT, chain, connect, insert_sql, keyring, remove_db, sealed

BATCH = 5_000
MB = 1024.0  # KiB per MiB
TARGET_FRACTION = 0.10  # the larger database's peak within 10% of the smaller's ...
TARGET_MB = 3.0  # ... or within 3 MB


def prefill(db: Path, n_cases: int, seed: int = 1) -> float:
    """A database holding ``n_cases`` petitions; returns the seconds it took."""
    t0 = time.perf_counter()
    remove_db(db)
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL") as engine:
        template = case_in(engine, "handling.investigating").id
    keys = keyring(Path(f"{db}.key"))  # the key file the engine made beside the database
    conn = connect(db, "OFF", foreign_keys=False)
    try:
        cur = conn.execute("SELECT * FROM cases WHERE id = ?", (template,))
        case_cols = [d[0] for d in cur.description]
        case_row = dict(zip(case_cols, cur.fetchone(), strict=True))
        cur = conn.execute("SELECT * FROM events WHERE case_id = ? ORDER BY seq", (template,))
        event_cols = [d[0] for d in cur.description if d[0] != "id"]
        events = [dict(zip([d[0] for d in cur.description], r, strict=True))
                  for r in cur.fetchall()]
        rng = random.Random(seed)

        def copies(count: int) -> Iterator[tuple[list[Any], list[list[Any]]]]:
            for _ in range(count):
                cid = f"{rng.getrandbits(128):032x}"
                copied = chain(cid, events, keys)
                row = {**case_row, "id": cid, "last_hash": copied[-1]["hash"]}
                row["seal"] = sealed(row, keys)
                yield [row[c] for c in case_cols], [[e[c] for c in event_cols] for e in copied]

        left = n_cases - 1
        conn.execute("BEGIN")
        while left > 0:
            batch = list(copies(min(BATCH, left)))
            conn.executemany(insert_sql("cases", case_cols), [c for c, _ in batch])
            conn.executemany(insert_sql("events", event_cols), [e for _, evs in batch for e in evs])
            left -= len(batch)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - t0


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def probe(db: Path, n_picked: int, slot: int = 0, slots: int = 1) -> dict[str, Any]:
    """In this (fresh) process: build an engine on ``db``, fire on random cases, report RSS.

    Picks ``n_picked`` distinct random cases by rowid (never loading all ids, which
    would itself grow with the number of cases) and fires ``thought_work`` (an
    activity) and ``decide`` (a transition) on each: ``2 * n_picked`` commands.
    ``decide`` moves a case on, so repeated probes on one database take cases
    from disjoint slots (rowid modulo ``slots``).
    """
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA cache_size=50")
        stored = int(conn.execute("SELECT max(rowid) FROM cases").fetchone()[0])
        pool = range(1 + slot, stored + 1, slots)
        rowids = random.Random(slot).sample(pool, min(n_picked, len(pool)))
        ids = [conn.execute("SELECT id FROM cases WHERE rowid = ?", (r,)).fetchone()[0]
               for r in rowids]
    finally:
        conn.close()
    rss_start = _status_kb("VmRSS")  # the engine's modules are already imported
    t0 = time.perf_counter()
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL") as engine:
        rss_built = _status_kb("VmRSS")
        for cid in ids:
            engine.fire(cid, "thought_work", actor=LEADER, data={"notes": "explained the law"})
            engine.fire(cid, "decide", actor=LEADER,
                        data={"outcome": "explanation", "decision_summary": "explained"})
        fired = 2 * len(ids)
        problems = engine.verify(ids[0])
        seconds = time.perf_counter() - t0
        rss_end = _status_kb("VmRSS")
    # The peak is VmHWM, not getrusage's ru_maxrss: after fork + exec Linux keeps the
    # parent's high-water mark in ru_maxrss, so a child of a big parent reports the parent's.
    hwm = _status_kb("VmHWM")  # the kernel updates it lazily: it can trail VmRSS a little
    peak = max(hwm, rss_end or 0) if hwm is not None else None
    if peak is None:  # no /proc: fall back to getrusage (KiB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            peak //= 1024
    return {"stored_cases": stored, "picked": len(ids), "fired": fired, "seconds": seconds,
            "chain_ok": not problems, "rss_start_kb": rss_start, "rss_engine_built_kb": rss_built,
            "rss_end_kb": rss_end, "peak_rss_kb": peak}


def run_probe(db: Path, n_picked: int, slot: int = 0, slots: int = 1) -> dict[str, Any]:
    """Run :func:`probe` in a fresh Python process and return what it printed."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", str(db), str(n_picked), str(slot), str(slots)],
        capture_output=True, text=True, timeout=300,
        cwd=ROOT,  # ``-m`` puts the cwd first on sys.path: the probe runs this same tree
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory probe on {db} failed ({out.returncode}):\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(ctx: Ctx) -> dict[str, Any]:
    """Peak RSS of fresh engine processes on pre-filled databases of two sizes."""
    small, large = ctx.pick(ctx.args.mem_sizes, (10_000, 100_000), (1_000, 5_000))
    picked, repeat = ctx.args.mem_picked, ctx.repeat(5)
    dbs = {n: ctx.work / f"memory-{n}.db" for n in (small, large)}
    prefill_s = {}
    for n, db in dbs.items():
        prefill_s[n] = prefill(db, n)
        ctx.progress(f"pre-filled {n:,} cases in {prefill_s[n]:.1f} s")
    probes: dict[int, list[dict[str, Any]]] = {small: [], large: []}
    for rep in range(repeat):
        for n in rotated((small, large), rep):
            r = run_probe(dbs[n], picked, slot=rep, slots=repeat)
            if r["stored_cases"] != n or not r["chain_ok"]:
                raise RuntimeError(f"memory probe on {n} cases went wrong: {r}")
            probes[n].append(r)
            ctx.progress(f"run {rep + 1}/{repeat} memory {n:>7,} cases: peak RSS "
                         f"{r['peak_rss_kb'] / MB:.1f} MB after {r['fired']} commands")

    def peak(n: int) -> list[float]:
        return [r["peak_rss_kb"] / MB for r in probes[n]]

    def size(n: int) -> dict[str, Any]:
        return {"cases": n, "peak_rss_mb": spread(peak(n)), "prefill_s": prefill_s[n],
                "growth_mb": spread([(r["rss_end_kb"] - r["rss_start_kb"]) / MB for r in probes[n]])}

    ratio = ratios(peak(large), peak(small))
    diff = spread([b - a for a, b in zip(peak(small), peak(large), strict=True)])
    ok = (abs(ratio["median"] - 1) <= TARGET_FRACTION or abs(diff["median"]) <= TARGET_MB)
    return {
        "config": {"cases_picked": picked, "repeat": repeat},
        "sizes": [small, large], "commands_per_probe": probes[small][0]["fired"],
        "small": size(small), "large": size(large), "ratio": ratio, "diff_mb": diff,
        "probes": {str(n): probes[n] for n in (small, large)},
        "targets": [target(f"memory {large:,} / {small:,} cases", ratio["median"],
                           f"within {TARGET_FRACTION:.0%} or {TARGET_MB:g} MB", ok)],
    }


def table(m: dict[str, Any]) -> Table:
    small, large = m["small"], m["large"]
    t = Table([f"fresh engine processes on databases of {small['cases']:,} and {large['cases']:,} "
               f"petitions, {m['commands_per_probe']} commands on random cases, "
               f"{m['config']['repeat']} runs each"])
    t.add(f"peak RSS, {small['cases']:,} cases", small["peak_rss_mb"], "MB")
    t.add(f"peak RSS, {large['cases']:,} cases", large["peak_rss_mb"], "MB")
    t.add("  difference (large - small)", m["diff_mb"], "MB")
    t.add("  ratio (large / small)", m["ratio"], "", m["targets"][0]["name"])
    t.notes.append(f"engine's own growth after import: {small['growth_mb']['median']:.2f} MB "
                   f"({small['cases']:,}) vs {large['growth_mb']['median']:.2f} MB ({large['cases']:,})")
    return t


if __name__ == "__main__":  # the probe's own process (see run_probe)
    db, picked, slot, slots = sys.argv[1:5]
    print(json.dumps(probe(Path(db), int(picked), int(slot), int(slots))))
