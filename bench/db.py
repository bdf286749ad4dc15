"""Databases for the suites: files and throwaway PostgreSQL databases, rows written fast.

The suites fill databases behind the engine (copied cases, generated histories, timers) with
stdlib ``sqlite3``, psycopg or a :class:`casework.persistence.Store` of their own on the same
URL, never through the engine's insides; and every hash chain they write is made by
:func:`chain`, the one place that knows how the engine hashes its events.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from casework.keys import load_or_create
from casework.persistence import Keyring
from casework.persistence.chain import GENESIS, event_hash, seal

ROOT = Path(__file__).resolve().parent.parent
PETITION = ROOT / "workflows" / "petition.yaml"
DEFAULT_ADMIN = os.environ.get("CASEWORK_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def dumps(v: Any) -> str:
    """JSON as the engine stores it: sorted keys, no spaces, UTF-8."""
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


def to_db(when: datetime) -> datetime:
    """An aware instant as the engine stores it: naive UTC."""
    return when if when.tzinfo is None else when.astimezone(UTC).replace(tzinfo=None)


def keyring(path: Path) -> Keyring:
    """The keys of the suite's databases (one key file for all of them, so that a ledger
    moves between them), created on first use as an engine creates its own."""
    return load_or_create(path)


def chain(case_id: str, events: Sequence[Mapping[str, Any]], keys: Keyring) -> list[dict[str, Any]]:
    """A case's events (in order, their columns as stored; ``at`` a datetime or its ISO text)
    as events of case ``case_id``, each with ``prev_hash`` and ``hash`` computed as the engine
    does (an HMAC under ``keys``' current key), so the copy or the made-up history is a case
    whose chain verifies."""
    prev = GENESIS
    out = []
    for e in events:
        at = e["at"] if isinstance(e["at"], datetime) else datetime.fromisoformat(e["at"])
        digest = e.get("command_digest")
        h = event_hash(prev, case_id, e["seq"], e["kind"], e["name"], e["from_state"],
                       e["to_state"], e["actor"], e["role"], at, e["changes"], e["details"],
                       e["idempotency_key"], keys.key, digest)
        out.append({**e, "case_id": case_id, "prev_hash": prev, "hash": h,
                    "key_id": keys.current, "command_digest": digest})
        prev = h
    return out


SEALED = ("id", "workflow", "version", "state", "final", "data", "escalation_level", "opened_at",
          "updated_at", "row_version", "last_seq", "last_hash", "clocks", "at_risk",
          "overdue_since", "party_key", "closed_at", "unit", "next_due_at", "next_deadline")
DERIVED = ("unit", "next_due_at", "next_deadline")  # kept with every write since migration 0009
FAR_DUE = datetime(9999, 12, 31)  # the stored next deadline of a case on which none runs


def sealed(row: Mapping[str, Any], keys: Keyring) -> str:
    """The seal the engine gives a case row with these columns (times as datetimes or their
    stored text; flags as booleans or 0/1; a row without the derived columns has none, and a
    next deadline at the far sentinel is none)."""
    parts: list[Any] = []
    for col in SEALED:
        v = row.get(col) if col in DERIVED else row[col]
        if col in ("opened_at", "updated_at", "overdue_since", "closed_at",
                   "next_due_at") and isinstance(v, str):
            v = datetime.fromisoformat(v)
        if col == "next_due_at" and v == FAR_DUE:
            v = None
        if col in ("final", "at_risk"):
            v = bool(v)
        parts.append(v)
    return seal(keys, parts)


def connect(path: Path, synchronous: str, *, foreign_keys: bool = True) -> sqlite3.Connection:
    """Stdlib ``sqlite3`` in autocommit mode (the transactions are the caller's) with the
    engine's pragmas: WAL, the ``synchronous`` level, foreign keys, a busy timeout."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in ("journal_mode=WAL", f"synchronous={synchronous}",
                   f"foreign_keys={'ON' if foreign_keys else 'OFF'}", "busy_timeout=30000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def make_schema(url: str) -> None:
    """The engine's tables at ``url``, made as the engine makes them."""
    from casework import Engine

    Engine(url, [PETITION]).close()


def insert_sql(table: str, cols: Sequence[str], mark: str = "?") -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"


def row_template(table: str, known: Mapping[str, Any], stamp: Any) -> tuple[list[str], list[Any]]:
    """Columns and values for a row of the engine's ``table``, whatever columns it has grown:
    ``known``'s values, and for any other NOT NULL column without a server default its model
    default or a placeholder of its type (``stamp`` for times)."""
    from casework.persistence import models
    from sqlalchemy import Boolean, DateTime, Integer

    cols: list[str] = []
    row: list[Any] = []
    for c in models.metadata.tables[table].columns:
        if c.name in known:
            value = known[c.name]
        elif c.primary_key or c.nullable or c.server_default is not None:
            continue
        elif c.default is not None and getattr(c.default, "is_scalar", False):
            value = getattr(c.default, "arg", None)
        else:
            t = c.type
            value = (False if isinstance(t, Boolean) else 0 if isinstance(t, Integer)
                     else stamp if isinstance(t, DateTime) else "")
        cols.append(c.name)
        row.append(value)
    return cols, row


class Throwaway:
    """A PostgreSQL database created for one run and dropped after it; a fresh schema per
    measurement."""

    def __init__(self, admin_url: str, prefix: str = "casework_bench") -> None:
        import psycopg

        self.admin_url = admin_url
        self.name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"{admin_url.rsplit('/', 1)[0]}/{self.name}"
        self.engine_url = self.url.replace("postgresql://", "postgresql+psycopg://", 1)

    def schema(self) -> str:
        """A new, empty schema; the engine URL that works in it."""
        import psycopg

        schema = f"b_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.engine_url}?options=-csearch_path%3D{schema}"

    def drop(self) -> None:
        """Drop the database (trying for a while if the server is restarting)."""
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def libpq(url: str) -> str:
    """An engine URL as a plain libpq URL (the search_path option is kept)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def pg_one(url: str, *queries: str) -> list[Any]:
    """The first value of each query's first row (None for a statement without rows), on a
    connection of its own, in autocommit."""
    import psycopg

    out = []
    with psycopg.connect(libpq(url), autocommit=True, connect_timeout=5) as conn:
        for q in queries:
            cur = conn.execute(q)
            out.append((cur.fetchone() or (None,))[0] if cur.description else None)
    return out


def server_version(url: str, settings: Sequence[str] = ()) -> str:
    """``SHOW server_version``, with the named settings in brackets."""
    version, *shown = pg_one(url, *(f"SHOW {s}" for s in ("server_version", *settings)))
    extra = ", ".join(f"{s}={v}" for s, v in zip(settings, shown, strict=True))
    return f"{version} ({extra})" if extra else str(version)


def server_started(url: str) -> Any:
    """When the PostgreSQL server last started (a restart under a measurement voids it; tests
    here restart the server)."""
    return pg_one(url, "SELECT pg_postmaster_start_time()")[0]


def wait_for_server(url: str, progress: Callable[[str], None], timeout: float = 120.0) -> None:
    """Return once the server at ``url`` answers again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            server_started(url)
            return
        except Exception as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come back: {e}") from None
            progress("  waiting for PostgreSQL to come back")
            time.sleep(2)
