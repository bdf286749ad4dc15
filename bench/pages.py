"""Which database pages each step of the reference work writes: ``python -m bench.pages``.

At ``synchronous=FULL`` a commit's cost grows with the pages it appends to the
WAL, so this counts them. The petition lifecycle runs through the engine on a
fresh SQLite file (``--warm`` cases first, untimed and uncounted, so the
tables and indexes have some size); then, for each counted step, the WAL is
checkpointed and truncated, the step runs, and the WAL's frames are read back
and each page is named by the table or index that owns it (SQLite's ``dbstat``
table, read before the step; pages the step added are ``(new)``). The same is
done for the raw floor's UPDATE + INSERT, for comparison.

It prints pages per step by owner and by trigger; ``--json PATH`` writes them.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from casework import Engine

from .stats import at_least
from .workload import CLERK, OPEN_DATA, PETITION, lifecycle, remove_db

WAL_HEADER = 32
FRAME_HEADER = 24


def wal_pages(db: Path) -> list[int]:
    """The page number of every frame in ``db``'s WAL, in order."""
    data = Path(f"{db}-wal").read_bytes()
    if len(data) < WAL_HEADER:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    out = []
    off = WAL_HEADER
    while off + FRAME_HEADER <= len(data):
        out.append(struct.unpack(">I", data[off:off + 4])[0])
        off += FRAME_HEADER + page_size
    return out


class PageCounter:
    """Counts the WAL pages of single steps, by the b-tree that owns each page."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.aux = sqlite3.connect(db, isolation_level=None)
        self.by_owner: Counter[str] = Counter()
        self.by_step: Counter[str] = Counter()
        self.steps: Counter[str] = Counter()

    def count(self, label: str, step: Callable[[], Any]) -> None:
        self.aux.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        owner = {p: name for name, p in self.aux.execute("SELECT name, pageno FROM dbstat")}
        step()
        for page in wal_pages(self.db):
            self.by_owner[owner.get(page, "(new)")] += 1
            self.by_step[label] += 1
        self.steps[label] += 1

    def figures(self) -> dict[str, Any]:
        n = sum(self.steps.values())
        return {
            "steps": n,
            "pages_per_step": sum(self.by_owner.values()) / n,
            "by_owner": {k: v / n for k, v in self.by_owner.most_common()},
            "by_step": {k: self.by_step[k] / self.steps[k] for k in self.steps},
        }

    def close(self) -> None:
        self.aux.close()


def engine_pages(db: Path, warm: int, counted: int) -> dict[str, Any]:
    remove_db(db)
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL") as engine:
        def run_case(i: int, pc: PageCounter | None) -> None:
            def open_case() -> None:
                ids.append(engine.open_case("petition", OPEN_DATA, actor=CLERK).id)
            ids: list[str] = []
            if pc is None:
                open_case()
            else:
                pc.count("open", open_case)
            for trigger, actor, data in lifecycle(i):
                def fire(t: str = trigger, a: str = actor, d: dict[str, Any] = data) -> None:
                    engine.fire(ids[0], t, actor=a, data=d)
                if pc is None:
                    fire()
                else:
                    pc.count(trigger, fire)

        for i in range(warm):
            run_case(i, None)
        pc = PageCounter(db)
        try:
            for i in range(warm, warm + counted):
                run_case(i, pc)
            return pc.figures()
        finally:
            pc.close()


def floor_pages(db: Path, warm: int, counted: int) -> dict[str, Any]:
    """The raw floor's transactions (``bench.workload.run_floor``'s statements)."""
    from .workload import _FLOOR_UPDATE, _floor_payloads, create_engine_schema

    remove_db(db)
    create_engine_schema(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    total = warm + counted
    ids = [f"{i:032x}" for i in range(total)]
    at = "2026-01-05 09:00:00.000000"
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO cases (id, workflow, version, state, final, data, escalation_level, "
        "opened_at, updated_at, row_version, last_seq, last_hash, clocks, at_risk) "
        "VALUES (?, 'petition', 'v', 'registered', 0, '{}', 0, ?, ?, 1, 0, '', '{}', 0)",
        [(cid, at, at) for cid in ids])
    conn.execute("COMMIT")
    h = "ab" * 32
    payloads = _floor_payloads()
    pc = PageCounter(db)
    try:
        for i, cid in enumerate(ids):
            for seq in range(1, 1 + 1 + len(lifecycle(i))):
                def step(cid: str = cid, seq: int = seq) -> None:
                    name, changes, data = payloads[min(seq - 1, len(payloads) - 1)]
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(_FLOOR_UPDATE, ("s", 0, data, at, seq + 1, seq, h, cid, seq))
                    conn.execute(
                        "INSERT INTO events (case_id, seq, kind, name, from_state, to_state, "
                        "actor, role, at, changes, details, idempotency_key, prev_hash, hash) "
                        "VALUES (?, ?, 'transition', ?, 'from', 'to', 'chen', 'handler', ?, ?, "
                        "'{}', NULL, ?, ?)", (cid, seq, name, at, changes, h, h))
                    conn.execute("COMMIT")
                if i < warm:
                    step()
                else:
                    pc.count("step", step)
        return pc.figures()
    finally:
        pc.close()
        conn.close()


def format_figures(name: str, f: dict[str, Any]) -> str:
    lines = [f"{name}: {f['pages_per_step']:.2f} WAL pages per step ({f['steps']} steps)"]
    lines += [f"  {k:<32} {v:5.2f}" for k, v in f["by_owner"].items()]
    if len(f["by_step"]) > 1:
        lines.append("  by step: " + ", ".join(f"{k} {v:.1f}" for k, v in f["by_step"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.split("\n\n")[0])
    p.add_argument("--warm", type=at_least(0), default=300, help="cases run first, not counted")
    p.add_argument("--cases", type=at_least(1), default=200, help="cases counted")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="casework-pages-") as tmp:
        figures = {"engine": engine_pages(Path(tmp) / "engine.db", a.warm, a.cases),
                   "floor": floor_pages(Path(tmp) / "floor.db", a.warm, a.cases)}
    print(format_figures("engine", figures["engine"]))
    print(format_figures("raw floor", figures["floor"]))
    if a.json is not None:
        a.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
