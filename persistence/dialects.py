"""What differs between SQLite and PostgreSQL, kept in one place.

SQLite: one writer at a time; a command opens its transaction with
``BEGIN IMMEDIATE`` so it holds the write lock before it reads the case, and the
store queues a process's writes in one lane (:class:`persistence.store.WriteLane`).
PostgreSQL: a command locks the case row with ``SELECT ... FOR UPDATE``;
timer claims use ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Float, Select, bindparam, cast, event, func, literal
from sqlalchemy import case as sql_case
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url


class Dialect:
    """The PostgreSQL (and default) behaviour."""

    name = "postgresql"
    #: Rows per maintained figure cell (see ``models.FigureCellRow.shard``).
    figure_shards = 16
    #: One writer at a time for the whole database: the store queues its process's writes
    #: in one lane and commits the commands waiting there together (SQLite). PostgreSQL
    #: locks rows: writers run side by side, each command its own transaction.
    one_writer = False

    def engine_kwargs(self, url: str, *, pool_size: int) -> dict[str, Any]:
        return {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": True}

    def configure(self, engine: Engine) -> None:
        """Install connection hooks; nothing to do for PostgreSQL."""

    def begin(self, cur: Any, *, write: bool) -> None:
        """Start a transaction on a DBAPI cursor (psycopg starts one implicitly)."""

    @staticmethod
    def datetime_in(value: datetime) -> Any:
        """A naive UTC datetime as the driver takes it."""
        return value

    @staticmethod
    def datetime_out(value: Any) -> datetime:
        """A stored datetime as a naive UTC datetime."""
        return value

    def json_field(self, column: Any, key: str) -> Any:
        """The text value of ``key`` in a JSON text column."""
        return cast(column, JSONB)[key].astext

    def json_number(self, column: Any, key: str) -> Any:
        """The numeric value of ``key`` in a JSON text column (NULL unless a JSON number:
        text, a bool or a list adds nothing, as the maintained figures count it)."""
        value = cast(column, JSONB)[key]
        return sql_case((func.jsonb_typeof(value) == "number", cast(value.astext, Float)))

    def json_equals(self, column: Any, key: str, value: Any) -> Any:
        """``key`` in a JSON text column equals the JSON value ``value``."""
        return cast(column, JSONB).op("->")(key) == cast(literal(json.dumps(value)), JSONB)

    def seconds_between(self, start: Any, end: Any) -> Any:
        return func.extract("epoch", end - start)

    def insert_ignore(self, table: Any) -> Any:
        """An insert that does nothing when the row's key is already there."""
        return pg_insert(table).on_conflict_do_nothing()

    def insert_add(self, table: Any, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
        """An insert that, when the row's key is already there, adds to ``columns`` instead."""
        st = pg_insert(table).values({c.name: bindparam(c.name) for c in table.c})
        return st.on_conflict_do_update(index_elements=list(keys), set_={
            c: table.c[c] + st.excluded[c] for c in columns})

    @staticmethod
    def group_text(value: Any) -> str | None:
        """A field's value as :meth:`json_field` reads it (the text a breakdown shows):
        ``jsonb``'s own rendering of the stored JSON (numbers as ``numeric`` prints them,
        object keys in ``jsonb``'s order)."""
        if value is None or isinstance(value, str):
            return value
        return _jsonb_text(value)

    def hold_figures(self, cur: Any) -> None:
        """Hold off a rebuild of the figures until this transaction ends (or wait for the
        one under way): taken by a command that finds the figures not built."""
        cur.execute("LOCK TABLE report_figures IN ROW EXCLUSIVE MODE")

    def lock_figures(self, cur: Any) -> None:
        """Hold off the commands' figure updates while the figures are rebuilt: a command
        that committed before is in the rebuild's reading, one after adds its own."""
        cur.execute("LOCK TABLE report_figures, report_stays IN SHARE ROW EXCLUSIVE MODE")

    def schema_lock(self, conn: Any) -> None:
        """Serialize schema creation between processes (inside a transaction)."""
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7227160)")

    def lock_case(self, stmt: Select[Any]) -> Select[Any]:
        """A select of one case that holds its row until the transaction ends."""
        return stmt.with_for_update()

    def claim(self, stmt: Select[Any]) -> Select[Any]:
        """A select of due work that skips rows another process holds."""
        return stmt.with_for_update(skip_locked=True)


class SQLiteDialect(Dialect):
    """SQLite file: WAL, foreign keys, busy timeout, chosen synchronous level."""

    name = "sqlite"
    one_writer = True
    figure_shards = 1  # one writer: no row locks to spread

    def __init__(self, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"sqlite synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms

    def engine_kwargs(self, url: str, *, pool_size: int) -> dict[str, Any]:
        u = make_url(url)
        if u.database in (None, "", ":memory:"):
            raise ValueError("casework needs a SQLite file, not an in-memory database")
        return {"connect_args": {"check_same_thread": False, "timeout": self.busy_timeout_ms / 1000},
                "pool_size": pool_size, "max_overflow": pool_size}

    def configure(self, engine: Engine) -> None:
        sync = self.synchronous
        busy = self.busy_timeout_ms

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            if conn.get_execution_options().get("casework_read"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    def begin(self, cur: Any, *, write: bool) -> None:
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    @staticmethod
    def datetime_in(value: datetime) -> Any:
        # The text form SQLAlchemy's SQLite DateTime type writes and reads.
        return value.isoformat(sep=" ", timespec="microseconds")

    @staticmethod
    def datetime_out(value: Any) -> datetime:
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)

    def json_field(self, column: Any, key: str) -> Any:
        return func.json_extract(column, f"$.{key}")

    def json_number(self, column: Any, key: str) -> Any:
        return sql_case((func.json_type(column, f"$.{key}").in_(["integer", "real"]),
                         func.json_extract(column, f"$.{key}")))

    def json_equals(self, column: Any, key: str, value: Any) -> Any:
        if isinstance(value, bool):
            value = int(value)
        return func.json_extract(column, f"$.{key}") == value

    def seconds_between(self, start: Any, end: Any) -> Any:
        return (func.julianday(end) - func.julianday(start)) * 86400.0

    def insert_ignore(self, table: Any) -> Any:
        return sqlite_insert(table).on_conflict_do_nothing()

    def insert_add(self, table: Any, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
        st = sqlite_insert(table).values({c.name: bindparam(c.name) for c in table.c})
        return st.on_conflict_do_update(index_elements=list(keys), set_={
            c: table.c[c] + st.excluded[c] for c in columns})

    @staticmethod
    def group_text(value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, (int, float)):
            return str(value)
        # json_extract gives a list or object as the stored text (canonical, sorted keys).
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()

    def hold_figures(self, cur: Any) -> None:
        """One writer at a time: a rebuild and a command never overlap."""

    def lock_figures(self, cur: Any) -> None:
        """The write transaction holds the database's write lock already."""

    def schema_lock(self, conn: Any) -> None:
        """The transaction began with BEGIN IMMEDIATE: it holds the write lock already."""

    def lock_case(self, stmt: Select[Any]) -> Select[Any]:
        return stmt  # BEGIN IMMEDIATE already holds the write lock

    def claim(self, stmt: Select[Any]) -> Select[Any]:
        return stmt


def _jsonb_text(value: Any) -> str:
    """The text PostgreSQL prints for the ``jsonb`` of ``value`` as stored (orjson's JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # jsonb keeps a number as numeric: no exponent, the scale written, no negative zero.
        number = Decimal(orjson.dumps(value).decode())
        text = format(number, "f")
        return text[1:] if number.is_zero() and text.startswith("-") else text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_jsonb_text(value[k])}"
                               for k in keys) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_jsonb_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def dialect_for(url: str, *, sqlite_synchronous: str, busy_timeout_ms: int) -> Dialect:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return SQLiteDialect(sqlite_synchronous, busy_timeout_ms)
    if backend == "postgresql":
        return Dialect()
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///FILE or postgresql+psycopg://")


__all__ = ["Dialect", "SQLiteDialect", "dialect_for"]
