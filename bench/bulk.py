"""Opening cases in bulk, and the cold start of the command line.

**Bulk import.** A unit's ledger of N petitions (the ledger file of
``run.py export``, see :mod:`persistence.ledger`) is imported into an empty
SQLite database with ``Engine.import_cases``: every line parsed, every case's
hash chain, numbering, head, state and data checked, then everything written
in one transaction. The ledger is made fast: one template case goes through
the engine (``open``, ``accept``, ``assign``), is exported, and its line is
copied N times under new time-ordered ids with each copy's hash chain
recomputed (:func:`persistence.chain.event_hash`), so every copy is a valid
case that the import checks in full.

The floor is what the database alone needs for the same rows: stdlib
``sqlite3`` reading the same file (``orjson``) and inserting the same cases,
events and timers with ``executemany`` in one transaction, on the engine's
schema with the same pragmas, without any check.

**Cold start.** Wall time of a fresh ``python run.py validate
workflows/petition.yaml`` (the interpreter the user types, which hands over to
the project's ``.venv``), beside a bare ``python -c pass`` in the same run.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from casework import Engine
from uuid6 import uuid7

from .workload import (
    CLERK,
    FOUR_FIXES,
    LEADER,
    OPEN_DATA,
    PETITION,
    ROOT,
    TRIAGE,
    create_engine_schema,
    rechain,
    remove_db,
)


def make_ledger(path: Path, n_cases: int, scratch: Path) -> int:
    """Write a ledger of ``n_cases`` valid petitions to ``path``; its size in bytes."""
    remove_db(scratch)
    with Engine(f"sqlite:///{scratch}", [PETITION], sqlite_synchronous="NORMAL") as engine:
        template = engine.open_case("petition", OPEN_DATA, actor=CLERK)
        engine.fire(template.id, "accept", actor=TRIAGE)
        engine.fire(template.id, "assign", actor=LEADER, data=FOUR_FIXES)
        with path.open("w", encoding="utf-8") as out:
            engine.export_cases(out)
    remove_db(scratch)
    lines = path.read_bytes().splitlines()
    header, versions, case_line = orjson.loads(lines[0]), lines[1:-1], orjson.loads(lines[-1])
    header["cases"] = n_cases
    case, events = case_line["case"], case_line["events"]
    ats = [datetime.fromisoformat(e["at"]) for e in events]
    with path.open("wb") as out:
        out.write(orjson.dumps(header) + b"\n")
        for v in versions:
            out.write(v + b"\n")
        for _ in range(n_cases):
            cid = uuid7().hex
            evs = rechain(events, ats, cid)
            line = {**case_line, "case": {**case, "id": cid, "last_hash": evs[-1]["hash"]},
                    "events": evs}
            out.write(orjson.dumps(line) + b"\n")
    return path.stat().st_size


def run_import(db: Path, ledger: Path, synchronous: str) -> tuple[float, int]:
    """Seconds ``Engine.import_cases`` takes on an empty database; cases imported."""
    remove_db(db)
    with Engine(f"sqlite:///{db}", [PETITION], sqlite_synchronous=synchronous) as engine:
        t0 = time.perf_counter()
        with ledger.open(encoding="utf-8") as inp:
            result = engine.import_cases(inp)
        seconds = time.perf_counter() - t0
    remove_db(db)
    return seconds, result.cases


def _insert(table: str, row: dict[str, Any]) -> str:
    return f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"


def run_import_floor(db: Path, ledger: Path, synchronous: str) -> tuple[float, int]:
    """The same rows from the same file with stdlib ``sqlite3`` and no checks."""
    remove_db(db)
    create_engine_schema(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
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
                for table, row in parts:
                    sql.setdefault(table, _insert(table, row))
                    rows[table].append(tuple(_plain(v) for v in row.values()))
            for table in ("cases", "events", "timers"):
                if rows[table]:
                    conn.executemany(sql[table], rows[table])
            conn.execute("COMMIT")
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
        remove_db(db)
    return seconds, len(rows["cases"])


def _plain(v: Any) -> Any:
    return orjson.dumps(v).decode() if isinstance(v, dict | list) else v


def cold_start(argv: list[str]) -> float:
    """Wall seconds of one fresh process running ``argv`` from the project's folder."""
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


VALIDATE = ["run.py", "validate", "workflows/petition.yaml"]


def system_python() -> str:
    """The interpreter a user types (outside the project's .venv), else this one."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    return str(base) if base.exists() else sys.executable
