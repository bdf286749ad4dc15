"""The engine's memory against the number of stored cases.

``prefill`` makes a database of N petitions in ``handling.investigating``
(3 events each). ``probe`` (run as ``python -m bench.memory DB``, a fresh
process) builds an engine on it, fires a few hundred commands on random cases
and prints its RSS as JSON. The engine keeps no per-case state in memory, so
the RSS should be the same for 10,000 or 100,000 stored cases.

How the database is pre-filled fast: opening 100,000 cases through the engine
takes minutes, so one template case is driven through the engine (``open``,
``accept``, ``assign``) and its rows are copied N-1 times with plain
``sqlite3`` ``executemany`` under new random case ids, in one transaction. The
events' hash chain is recomputed for each new id with the engine's own
:func:`persistence.chain.event_hash`, so every copied case is a valid case:
the engine fires on it and ``Engine.verify`` finds its chain intact (the probe
checks one). Copying the rows with ``INSERT ... SELECT`` would be as fast but
would leave hashes that name the template's id.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from casework import Engine

from .workload import (
    CLERK,
    FOUR_FIXES,
    LEADER,
    OPEN_DATA,
    PETITION,
    ROOT,
    TRIAGE,
    rechain,
    remove_db,
)

BATCH = 5_000


def prefill(db: Path, n_cases: int, seed: int = 1) -> float:
    """A database holding ``n_cases`` petitions; returns the seconds it took."""
    t0 = time.perf_counter()
    remove_db(db)
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL") as engine:
        template = engine.open_case("petition", OPEN_DATA, actor=CLERK)
        engine.fire(template.id, "accept", actor=TRIAGE)
        engine.fire(template.id, "assign", actor=LEADER, data=FOUR_FIXES)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        cur = conn.execute("SELECT * FROM cases WHERE id = ?", (template.id,))
        case_cols = [d[0] for d in cur.description]
        case_row = dict(zip(case_cols, cur.fetchone(), strict=True))
        cur = conn.execute("SELECT * FROM events WHERE case_id = ? ORDER BY seq", (template.id,))
        event_cols = [d[0] for d in cur.description if d[0] != "id"]
        events = [dict(zip([d[0] for d in cur.description], r, strict=True))
                  for r in cur.fetchall()]
        ats = [datetime.fromisoformat(e["at"]) for e in events]
        ins_case = (f"INSERT INTO cases ({', '.join(case_cols)}) "
                    f"VALUES ({', '.join('?' * len(case_cols))})")
        ins_event = (f"INSERT INTO events ({', '.join(event_cols)}) "
                     f"VALUES ({', '.join('?' * len(event_cols))})")
        rng = random.Random(seed)

        def copies(count: int) -> Iterator[tuple[list[Any], list[list[Any]]]]:
            for _ in range(count):
                cid = f"{rng.getrandbits(128):032x}"
                copied = rechain(events, ats, cid)
                row = {**case_row, "id": cid, "last_hash": copied[-1]["hash"]}
                yield [row[c] for c in case_cols], [[e[c] for c in event_cols] for e in copied]

        left = n_cases - 1
        conn.execute("BEGIN")
        while left > 0:
            batch = list(copies(min(BATCH, left)))
            conn.executemany(ins_case, [c for c, _ in batch])
            conn.executemany(ins_event, [e for _, evs in batch for e in evs])
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
        [sys.executable, "-m", "bench.memory", str(db), "--picked", str(n_picked),
         "--slot", str(slot), "--slots", str(slots)],
        capture_output=True, text=True, timeout=300,
        cwd=ROOT,  # ``-m`` puts the cwd first on sys.path: the probe runs this same tree
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory probe on {db} failed ({out.returncode}):\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=probe.__doc__)
    p.add_argument("db", type=Path)
    p.add_argument("--picked", type=int, default=200)
    p.add_argument("--slot", type=int, default=0)
    p.add_argument("--slots", type=int, default=1)
    a = p.parse_args(argv)
    print(json.dumps(probe(a.db, a.picked, a.slot, a.slots)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
