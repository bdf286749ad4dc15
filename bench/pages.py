"""``pages``: the WAL pages each step of the reference work writes, by the table or index
that owns each page (SQLite's ``dbstat``), for the engine and the raw floor
(``bench/README.md``).
"""

from __future__ import annotations

import sqlite3
import struct
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from casework import Engine

from tests.petition_steps import open_petition

from .base import Ctx, Table
from .db import PETITION, remove_db
from .workload import floor_payloads, lifecycle, sqlite_floor, steps_of

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

    def count(self, label: str, step: Callable[[], Any]) -> Any:
        """Run ``step`` and count the pages it wrote; what it returned."""
        self.aux.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        owner = {p: name for name, p in self.aux.execute("SELECT name, pageno FROM dbstat")}
        out = step()
        for page in wal_pages(self.db):
            self.by_owner[owner.get(page, "(new)")] += 1
            self.by_step[label] += 1
        self.steps[label] += 1
        return out

    def figures(self) -> dict[str, Any]:
        n = sum(self.steps.values())
        self.aux.close()
        return {
            "steps": n,
            "pages_per_step": sum(self.by_owner.values()) / n,
            "by_owner": {k: v / n for k, v in self.by_owner.most_common()},
            "by_step": {k: self.by_step[k] / self.steps[k] for k in self.steps},
        }


def engine_pages(db: Path, warm: int, counted: int) -> dict[str, Any]:
    remove_db(db)
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous="NORMAL") as engine:
        pc: PageCounter | None = None

        def step(label: str, fn: Callable[[], Any]) -> Any:
            return fn() if pc is None else pc.count(label, fn)

        for i in range(warm + counted):
            if i == warm:
                pc = PageCounter(db)
            case = step("open", partial(open_petition, engine))
            for trigger, actor, data in lifecycle(i):
                step(trigger, partial(engine.fire, case.id, trigger, actor=actor, data=data))
        assert pc is not None
        return pc.figures()


def floor_pages(db: Path, warm: int, counted: int) -> dict[str, Any]:
    """The raw floor's transactions (``bench.workload.Floor``'s statements)."""
    conn, floor = sqlite_floor(db, "NORMAL", warm + counted)
    payloads = floor_payloads()
    pc = PageCounter(db)
    try:
        for i in range(warm + counted):
            for seq in range(1, steps_of(i) + 1):
                args = (f"{i:032x}", seq, payloads[min(seq - 1, len(payloads) - 1)], "state", "to")
                if i < warm:
                    floor.step(*args)
                else:
                    pc.count("step", partial(floor.step, *args))
        return pc.figures()
    finally:
        conn.close()


def run(ctx: Ctx) -> dict[str, Any]:
    warm, counted = ctx.pick(ctx.args.warm, 300, 30), ctx.cases(200, 20)
    return {"config": {"warm_cases": warm, "cases": counted},
            "engine": engine_pages(ctx.work / "engine.db", warm, counted),
            "floor": floor_pages(ctx.work / "floor.db", warm, counted),
            "targets": []}


def table(res: dict[str, Any]) -> Table:
    cfg = res["config"]
    t = Table([f"WAL pages per step: {cfg['warm_cases']} cases first, then {cfg['cases']} counted, "
               f"at synchronous=NORMAL; by the table or index that owns each page"])
    for name, label in (("engine", "engine"), ("floor", "raw floor")):
        f = res[name]
        t.add(f"{label}: WAL pages per step ({f['steps']} steps)", f["pages_per_step"])
        for owner, v in f["by_owner"].items():
            t.add(f"  {owner}", v)
        if len(f["by_step"]) > 1:
            t.notes.append(f"{label} by step: "
                           + ", ".join(f"{k} {v:.1f}" for k, v in f["by_step"].items()))
    return t
