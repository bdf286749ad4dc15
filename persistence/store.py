"""The store: one database, its connection pool, and its transactions.

A command runs in one write transaction (:meth:`Store.write`). On SQLite it
opens with ``BEGIN IMMEDIATE`` (the write lock first, so two commands never
interleave); on PostgreSQL the case row is locked with ``FOR UPDATE``.

SQLAlchemy builds the schema (SQLModel tables), the pool and every statement
(:mod:`persistence.sql`); transactions run the compiled SQL on the pooled
DBAPI connection, which spares SQLAlchemy's per-execution work on the path
every command takes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine

from .chain import Keyring
from .dialects import dialect_for
from .errors import DatabaseUnavailable, DuplicateKey
from .migrate import check_schema
from .sql import Statements
from .tx import ReadTx, WriteTx


class Store:
    """One database (a SQLite file or PostgreSQL) holding cases, events and timers."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL",
                 busy_timeout_ms: int = 10_000, pool_size: int = 5, echo: bool = False,
                 keyring: Keyring | None = None) -> None:
        self.url = url
        self.keyring = keyring
        self.dialect = dialect_for(url, sqlite_synchronous=sqlite_synchronous,
                                   busy_timeout_ms=busy_timeout_ms)
        self.engine = create_engine(url, echo=echo, hide_parameters=True, pool_reset_on_return=None,
                                    **self.dialect.engine_kwargs(url, pool_size=pool_size))
        self.dialect.configure(self.engine)
        dbapi = self.engine.dialect.dbapi
        assert dbapi is not None
        self._integrity_error: type[Exception] = dbapi.IntegrityError
        self._unavailable: tuple[type[Exception], ...] = (dbapi.OperationalError, dbapi.InterfaceError)
        self.sql = Statements(self.engine.dialect, self.dialect)
        self._pool_size = pool_size
        self._keep = self.dialect.name == "sqlite"
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()  # a thread's end frees its entry
        self._held_lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self.dialect.name

    def prepare_schema(self) -> str:
        """Create a new database's schema; refuse one whose revision differs from the code's.

        Raises :class:`persistence.migrate.SchemaMismatch` with the command to run.
        """
        return check_schema(self.engine, self.dialect.schema_lock)

    def dispose(self) -> None:
        with self._held_lock:
            held = list(self._held)
            self._held = weakref.WeakSet()
        for h in held:
            h.release()
        self.engine.dispose()

    def _checkout(self) -> tuple[Any, bool]:
        """A pooled connection for this thread, and whether the thread keeps it.

        On SQLite a thread keeps its connection between transactions (sparing a pool round
        trip per command) while fewer than ``pool_size`` are kept; other threads check out and
        return one per transaction, so a host with many threads never starves the pool. A
        server database can drop connections (a restart), so there every transaction checks
        one out, and the pool tests it first.
        """
        if not self._keep:
            try:
                return self.engine.raw_connection(), False
            except Exception as e:
                raise DatabaseUnavailable(f"cannot connect: {e}") from None
        held = getattr(self._local, "held", None)
        if held is not None and held.conn is not None and not held.busy:
            held.busy = True
            return held.conn, True
        try:
            conn = self.engine.raw_connection()
        except Exception as e:
            raise DatabaseUnavailable(f"cannot connect: {e}") from None
        if held is not None and held.conn is not None:
            return conn, False  # a transaction inside another one: its own connection
        with self._held_lock:
            if len(self._held) < self._pool_size:
                h = _Held(conn)
                h.busy = True
                self._local.held = h
                self._held.add(h)
                return conn, True
        return conn, False

    def _drop(self) -> None:
        """Forget this thread's kept connection (after an error on it)."""
        held = getattr(self._local, "held", None)
        if held is not None:
            with self._held_lock:
                self._held.discard(held)
            held.conn = None
            self._local.held = None

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        conn, kept = self._checkout()
        failed = False
        try:
            cur = conn.cursor()
            try:
                self.dialect.begin(cur, write=write)
                yield cur
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except Exception:  # the connection is gone; the pool will replace it
                    failed = True
                    conn.invalidate()
                raise
            finally:
                try:
                    cur.close()
                except Exception:
                    pass
        except self._integrity_error as e:
            text = str(e)
            if any(k in text for k in ("idempotency_key", "uq_timers_pending_cron",
                                       "timers.workflow, timers.name", "cases_pkey",
                                       "cases.id")):
                raise DuplicateKey(text) from None
            raise
        except self._unavailable as e:
            failed = True
            raise DatabaseUnavailable(f"database unavailable: {e}") from None
        finally:
            if kept:
                self._local.held.busy = False
            if failed and kept:
                self._drop()
                try:
                    conn.invalidate()
                except Exception:
                    pass
            if failed or not kept:
                conn.close()

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """One write transaction; commits on success, rolls back on any error."""
        with self._transaction(write=True) as cur:
            yield WriteTx(self.sql, self.dialect, cur, self.keyring)

    @contextmanager
    def read(self) -> Iterator[ReadTx]:
        """A read-only transaction (no write lock on SQLite)."""
        with self._transaction(write=False) as cur:
            yield ReadTx(self.sql, self.dialect, cur, self.keyring)


class _Held:
    """A connection a thread keeps; returned to the pool when the thread ends or on dispose."""

    __slots__ = ("__weakref__", "busy", "conn")

    def __init__(self, conn: Any) -> None:
        self.conn: Any = conn
        self.busy = False

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def __del__(self) -> None:  # the thread that kept it has ended
        self.release()
