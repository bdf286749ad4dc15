"""``bulk``: opening a unit's cases in bulk (``bench/README.md``).

A ledger of N valid petitions (``run.py export`` format: one template case's line copied
under new ids, each copy's chain made by :func:`bench.db.chain`) is imported with
``Engine.import_cases``, beside a floor: stdlib ``sqlite3`` reading the same file and
inserting the same rows with ``executemany``, without any check.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from casework import Engine
from uuid6 import uuid7

from tests.petition_steps import case_in

from .base import Ctx, Table, ratios, rotated, spread
from .db import PETITION, chain, connect, insert_sql, keyring, make_schema, remove_db


def make_ledger(path: Path, n_cases: int, scratch: Path, key_file: Path) -> int:
    """Write a ledger of ``n_cases`` valid petitions to ``path``; its size in bytes."""
    remove_db(scratch)
    keys = keyring(key_file)
    with Engine(f"sqlite:///{scratch}", [PETITION], sqlite_synchronous="NORMAL",
                key_file=key_file) as engine:
        case_in(engine, "handling.investigating")
        with path.open("w", encoding="utf-8") as out:
            engine.export_cases(out)
    remove_db(scratch)
    lines = path.read_bytes().splitlines()
    header, versions, case_line = orjson.loads(lines[0]), lines[1:-1], orjson.loads(lines[-1])
    header["cases"] = n_cases
    case, events = case_line["case"], case_line["events"]
    with path.open("wb") as out:
        out.write(orjson.dumps(header) + b"\n")
        for v in versions:
            out.write(v + b"\n")
        for _ in range(n_cases):
            cid = uuid7().hex
            evs = chain(cid, events, keys)
            line = {**case_line, "case": {**case, "id": cid, "last_hash": evs[-1]["hash"]},
                    "events": evs}
            out.write(orjson.dumps(line) + b"\n")
    return path.stat().st_size


def run_import(db: Path, ledger: Path, synchronous: str, key_file: Path) -> tuple[float, int]:
    """Seconds ``Engine.import_cases`` takes on an empty database; cases imported."""
    remove_db(db)
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous=synchronous,
                key_file=key_file) as engine:
        t0 = time.perf_counter()
        with ledger.open(encoding="utf-8") as inp:
            result = engine.import_cases(inp)
        seconds = time.perf_counter() - t0
    remove_db(db)
    return seconds, result.cases


def _plain(v: Any) -> Any:
    return orjson.dumps(v).decode() if isinstance(v, dict | list) else v


def run_import_floor(db: Path, ledger: Path, synchronous: str) -> tuple[float, int]:
    """The same rows from the same file with stdlib ``sqlite3`` and no checks."""
    remove_db(db)
    make_schema(f"sqlite:///{db}")
    conn = connect(db, synchronous)
    try:
        t0 = time.perf_counter()
        rows: dict[str, list[tuple[Any, ...]]] = {"cases": [], "events": [], "timers": []}
        sql: dict[str, str] = {}
        with ledger.open("rb") as inp:
            lines = iter(inp)
            next(lines)  # the header
            conn.execute("BEGIN IMMEDIATE")
            for raw in lines:
                item = orjson.loads(raw)
                if "workflow_version" in item:
                    wv = item["workflow_version"]
                    conn.execute("INSERT OR IGNORE INTO workflow_versions "
                                 "(name, version, definition, source, created_at) "
                                 "VALUES (?, ?, ?, ?, ?)",
                                 (wv["name"], wv["version"], wv["definition"], wv["source"],
                                  wv["created_at"]))
                    continue
                cid = item["case"]["id"]
                parts = [("cases", item["case"])]
                parts += [("events", e) for e in item["events"]]
                parts += [("timers", {**t, "case_id": cid}) for t in item["timers"]]
                for table_name, row in parts:
                    sql.setdefault(table_name, insert_sql(table_name, list(row)))
                    rows[table_name].append(tuple(_plain(v) for v in row.values()))
            for table_name in ("cases", "events", "timers"):
                if rows[table_name]:
                    conn.executemany(sql[table_name], rows[table_name])
            conn.execute("COMMIT")
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
        remove_db(db)
    return seconds, len(rows["cases"])


def run(ctx: Ctx) -> dict[str, Any]:
    """Import a ledger through the engine and load it raw, alternating."""
    n = ctx.pick(ctx.args.bulk, 100_000, 2_000)
    repeat = min(ctx.repeat(3), 3)  # each run imports the whole ledger: fewer runs than the rest
    ledger = ctx.work / "ledger.jsonl"
    t0 = time.perf_counter()
    key_file = ctx.work / "bench.key"  # one office: the ledger's key is the target's too
    size = make_ledger(ledger, n, ctx.work / "template.db", key_file)
    ctx.progress(f"wrote a ledger of {n:,} cases ({size / 1e6:.0f} MB) in "
                 f"{time.perf_counter() - t0:.1f} s")
    engine_s: list[float] = []
    floor_s: list[float] = []
    for rep in range(repeat):
        for which in rotated(("engine", "floor"), rep):
            if which == "engine":
                sec, done = run_import(ctx.work / "import.db", ledger, "FULL", key_file)
                engine_s.append(sec)
            else:
                sec, done = run_import_floor(ctx.work / "import-floor.db", ledger, "FULL")
                floor_s.append(sec)
            if done != n:
                raise RuntimeError(f"{which} import wrote {done} cases of {n}")
            ctx.progress(f"run {rep + 1}/{repeat} bulk   {which:<6} {sec:8.1f} s")
    ledger.unlink()
    return {
        "config": {"cases": n, "repeat": repeat},
        "cases": n, "ledger_mb": size / 1e6, "synchronous": "FULL",
        "engine_s": spread(engine_s),
        "engine_cases_per_s": spread([n / s for s in engine_s]),
        "floor_s": spread(floor_s),
        "ratio": ratios(floor_s, engine_s),
        "targets": [],
    }


def table(b: dict[str, Any]) -> Table:
    t = Table([f"a ledger of {b['cases']:,} petitions ({b['ledger_mb']:.0f} MB) into an empty "
               f"SQLite file at synchronous={b['synchronous']}, {b['config']['repeat']} runs each"])
    t.add(f"bulk import, {b['cases']:,} cases", b["engine_s"], "s")
    t.add("  cases/s", b["engine_cases_per_s"])
    t.add("  raw sqlite3 load, same rows", b["floor_s"], "s")
    t.add("  floor / engine", b["ratio"])
    return t
