"""The store: one database, its connection pool, and its transactions.

A command runs in one write transaction; on SQLite it opens with ``BEGIN IMMEDIATE``
(the write lock first, so two commands never interleave); on PostgreSQL the case row
is locked with ``FOR UPDATE``.

SQLite takes one writer at a time, so the store queues the writes of its process in
one *lane* (:class:`WriteLane`), in arrival order: a thread waits for its turn in the
lane, never in SQLite's busy handler (which is left for other processes). Commands
(:meth:`Store.submit`) that wait in the lane at the same moment commit together: the
thread at the head runs its own command and then those queued behind it, each inside
its own ``SAVEPOINT``, in one transaction with one ``COMMIT`` (one fsync at
``synchronous=FULL``); every caller gets its own result or its own error once that
commit is done. :meth:`Store.write` (the scheduler, migrations, ledgers) takes its turn
in the same lane, alone. On PostgreSQL writers run side by side on their own
connections, and :meth:`Store.submit` is one transaction per command (see
``bench/RESULTS.md`` for what grouping measured there).

SQLAlchemy builds the schema (SQLModel tables), the pool and every statement
(:mod:`persistence.sql`); transactions run the compiled SQL on the pooled
DBAPI connection, which spares SQLAlchemy's per-execution work on the path
every command takes.
"""

from __future__ import annotations

import contextvars
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import create_engine

from .chain import Keyring
from .dialects import dialect_for
from .errors import DatabaseUnavailable, DuplicateKey, PersistenceError
from .migrate import check_schema
from .sql import Statements
from .tx import ReadTx, WriteTx

T = TypeVar("T")

#: What an integrity error names when a concurrent writer stored the same key first.
_DUPLICATE = ("idempotency_key", "uq_timers_pending_cron", "timers.workflow, timers.name",
              "cases_pkey", "cases.id")


class StoreClosed(PersistenceError):
    """The store was closed (``Engine.close()``) before the write could run: nothing of it
    was written."""


class NestedWrite(PersistenceError):
    """A write was asked for inside this thread's own write transaction on SQLite, where it
    could never take the write lock (the outer transaction holds it until it ends)."""


class Store:
    """One database (a SQLite file or PostgreSQL) holding cases, events and timers.

    ``group_max`` and ``group_ms`` bound a group commit: a group takes no more commands
    once it holds ``group_max`` of them or has run for ``group_ms`` milliseconds.
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL",
                 busy_timeout_ms: int = 10_000, pool_size: int = 5, echo: bool = False,
                 keyring: Keyring | None = None, group_max: int = 32,
                 group_ms: float = 5.0) -> None:
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
        self.lane = WriteLane(self, max_size=group_max, max_seconds=group_ms / 1000,
                              wait_seconds=busy_timeout_ms / 1000)
        #: Whether :meth:`submit` groups commands in the lane (SQLite) or runs each in a
        #: transaction of its own (PostgreSQL: row locks, writers side by side).
        self.group_commit = self.dialect.one_writer

    @property
    def backend(self) -> str:
        return self.dialect.name

    def prepare_schema(self) -> str:
        """Create a new database's schema; refuse one whose revision differs from the code's.

        Raises :class:`persistence.migrate.SchemaMismatch` with the command to run.
        """
        return check_schema(self.engine, self.dialect.schema_lock)

    def refresh_statistics(self, *tables: str) -> None:
        """After tables were rewritten in bulk: on PostgreSQL ``VACUUM ANALYZE`` them, so the
        planner knows their size and index-only scans need not visit every row (the
        visibility map); SQLite needs nothing."""
        if self.dialect.name != "postgresql":
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in tables:
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")

    def dispose(self) -> None:
        """Close the lane (queued writes fail with :class:`StoreClosed`; the group in hand is
        waited for, within the busy timeout) and release every connection."""
        self.lane.close()
        with self._held_lock:
            held = list(self._held)
            self._held = weakref.WeakSet()
        for h in held:
            h.release()
        self.engine.dispose()

    def _connect(self) -> Any:
        try:
            return self.engine.raw_connection()
        except Exception as e:
            raise DatabaseUnavailable(f"cannot connect: {e}") from None

    def _checkout(self) -> tuple[Any, bool]:
        """A pooled connection for this thread, and whether the thread keeps it.

        On SQLite a thread keeps its connection between read transactions (sparing a pool
        round trip each) while fewer than ``pool_size`` are kept; other threads check out
        and return one per transaction, so a host with many threads never starves the pool.
        (Writes there use the lane's one connection.) A server database can drop connections
        (a restart), so there every transaction checks one out, and the pool tests it first.
        """
        if not self._keep:
            return self._connect(), False
        held = getattr(self._local, "held", None)
        if held is not None and held.conn is not None and not held.busy:
            held.busy = True
            return held.conn, True
        conn = self._connect()
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

    def mapped(self, e: BaseException) -> BaseException:
        """The storage layer's own error for a driver's error (else ``e`` itself)."""
        if isinstance(e, self._integrity_error):
            text = str(e)
            return DuplicateKey(text) if any(k in text for k in _DUPLICATE) else e
        if isinstance(e, self._unavailable):
            return DatabaseUnavailable(f"database unavailable: {e}")
        return e

    @contextmanager
    def _on(self, conn: Any, write: bool, broken: list[bool]) -> Iterator[Any]:
        """A transaction on ``conn``; commits on success, rolls back on any error, and
        raises the storage layer's errors. ``broken`` gets True when the connection is
        no longer fit for use (it is invalidated: the pool replaces it)."""
        try:
            cur = conn.cursor()
            try:
                self.dialect.begin(cur, write=write)
                yield cur
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except Exception:  # the connection is gone
                    broken.append(True)
                    try:
                        conn.invalidate()
                    except Exception:
                        pass
                raise
            finally:
                try:
                    cur.close()
                except Exception:
                    pass
        except self._unavailable as e:
            broken.append(True)
            raise self.mapped(e) from None
        except self._integrity_error as e:
            duplicate = self.mapped(e)
            if duplicate is e:
                raise
            raise duplicate from None

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        broken: list[bool] = []
        if write and self.dialect.one_writer:
            with self.lane.turn() as conn:
                try:
                    with self._on(conn, True, broken) as cur:
                        yield cur
                finally:
                    if broken:
                        self.lane.drop_connection()
            return
        conn, kept = self._checkout()
        try:
            with self._on(conn, write, broken) as cur:
                yield cur
        finally:
            failed = bool(broken)
            if kept:
                self._local.held.busy = False
            if failed and kept:
                self._drop()
                try:
                    conn.invalidate()
                except Exception:
                    pass
            if failed or not kept:
                try:
                    conn.close()
                except Exception:
                    pass

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """One write transaction of its own; commits on success, rolls back on any error.
        On SQLite it waits for its turn in the lane (never grouped with others)."""
        with self._transaction(write=True) as cur:
            yield WriteTx(self.sql, self.dialect, cur, self.keyring)

    @contextmanager
    def read(self) -> Iterator[ReadTx]:
        """A read-only transaction (no write lock on SQLite)."""
        with self._transaction(write=False) as cur:
            yield ReadTx(self.sql, self.dialect, cur, self.keyring)

    def submit(self, work: Callable[[WriteTx], T]) -> T:
        """Run ``work(tx)`` as one command and return what it returns once it is committed.

        With :attr:`group_commit` (SQLite) the command waits in the lane and may commit in
        one transaction with the commands queued beside it, inside a savepoint of its own:
        an error it raises rolls back its own writes only and is raised here; a failure of
        the whole transaction raises :class:`DatabaseUnavailable` for every command in it.
        ``work`` may run on another thread (the one at the head of the lane) under this
        thread's context variables; it must not start transactions of its own that write.
        Without it, a transaction of its own (PostgreSQL).
        """
        if self.group_commit and (self.dialect.one_writer or not self.lane.holding()):
            return self.lane.run(work)
        with self.write() as tx:
            return work(tx)


# -- the lane --------------------------------------------------------------------------------

_QUEUED, _LEAD, _TAKEN, _DONE = range(4)


class _Ticket:
    """One write waiting in the lane: a command (``work``) or a turn of its own."""

    __slots__ = ("ctx", "error", "ready", "result", "state", "work")

    def __init__(self, work: Callable[[WriteTx], Any] | None) -> None:
        self.work = work  # None: a turn for a transaction of the caller's own
        self.state = _QUEUED
        self.ctx: contextvars.Context | None = None
        self.ready: threading.Event | None = None
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        error, self.error = self.error, None
        if error is not None:
            raise error
        return self.result


class WriteLane:
    """The writes of one process, in arrival order, on one connection (see the module).

    The thread that finds the lane free leads: it runs its own command at once (no group
    forms without a queue), then takes the commands queued behind it while the group is
    small and young enough, commits, hands each caller its outcome and passes the lane to
    the next in line. A turn (:meth:`turn`) holds the lane for one transaction of the
    caller's own. Figures: ``groups``, ``commands`` (grouped commands committed or
    refused), ``largest``.
    """

    def __init__(self, store: Store, *, max_size: int, max_seconds: float,
                 wait_seconds: float) -> None:
        self._store = store
        self.max_size = max(1, max_size)
        self.max_seconds = max_seconds
        self.wait_seconds = wait_seconds
        self._mutex = threading.Lock()
        self._free = threading.Condition(self._mutex)
        self._queue: deque[_Ticket] = deque()
        self._busy = False  # a leader or a turn holds the lane
        self._closing = False
        self._close_conn = False  # the holder closes the connection when it is done
        self._local = threading.local()
        self._conn: Any = None
        self.groups = 0
        self.commands = 0
        self.largest = 0

    def waiting(self) -> int:
        """How many writes wait in line now."""
        with self._mutex:
            return len(self._queue)

    def holding(self) -> bool:
        """Whether this thread holds the lane (its command or turn is running)."""
        return bool(getattr(self._local, "holding", False))

    # -- entering and leaving ---------------------------------------------------------------
    def _enter(self, t: _Ticket) -> None:
        """Lead now, or wait in line until led or done (``t.state`` says which)."""
        if self.holding():
            raise NestedWrite("a write inside this thread's own write transaction: on SQLite "
                              "it could never take the write lock; run it after the command")
        with self._mutex:
            if self._closing:
                raise StoreClosed("the store is closed: the write was not run")
            if not self._busy:
                self._busy = True
                t.state = _LEAD
                return
            t.ready = threading.Event()
            if t.work is not None:
                t.ctx = contextvars.copy_context()
            self._queue.append(t)
        self._wait(t)

    def _wait(self, t: _Ticket) -> None:
        assert t.ready is not None
        try:
            if not t.ready.wait(self.wait_seconds):
                with self._mutex:
                    if t.state == _QUEUED:  # still in line: give up, as the busy timeout would
                        self._queue.remove(t)
                        t.state = _DONE
                        raise DatabaseUnavailable(
                            "database unavailable: this process's other writes held the lane "
                            f"past the busy timeout ({self.wait_seconds:g} s)")
                t.ready.wait()  # taken into a group or made leader: the outcome comes
        except BaseException:  # interrupted (or timed out) while waiting
            with self._mutex:
                if t.state == _QUEUED:
                    self._queue.remove(t)
                    raise
                lead = t.state == _LEAD
            if lead:
                self._leave()
            raise

    def _leave(self) -> None:
        """Pass the lane to the next in line, or mark it free."""
        conn = None
        with self._mutex:
            if self._queue:
                nxt = self._queue.popleft()
                nxt.state = _LEAD
                assert nxt.ready is not None
                nxt.ready.set()
                return
            self._busy = False
            if self._close_conn:
                self._close_conn = False
                conn, self._conn = self._conn, None
            self._free.notify_all()
        if conn is not None:
            _close(conn)

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._store._connect()
        return self._conn

    def drop_connection(self) -> None:
        """Forget the lane's connection after an error on it (the holder's call)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
            except Exception:
                pass
            _close(conn)

    @contextmanager
    def turn(self) -> Iterator[Any]:
        """Hold the lane for one transaction of the caller's own; the lane's connection."""
        t = _Ticket(None)
        self._enter(t)
        if t.state == _DONE:  # the store closed while it waited
            t.outcome()
        self._local.holding = True
        try:
            yield self._connection()
        finally:
            self._local.holding = False
            self._leave()

    def run(self, work: Callable[[WriteTx], T]) -> T:
        """Run one command in the lane; its result once committed, or its own error."""
        t = _Ticket(work)
        self._enter(t)
        if t.state == _LEAD:
            members = [t]
            self._local.holding = True
            try:
                self._group(t, members)
            finally:
                self._local.holding = False
                try:
                    self._leave()  # the next group starts while this one's callers wake
                finally:
                    for m in members[1:]:
                        m.state = _DONE
                        assert m.ready is not None
                        m.ready.set()
        result: T = t.outcome()
        return result

    def close(self) -> None:
        """Refuse what waits in line (:class:`StoreClosed`), wait for the write in hand
        (within the wait bound; not when called from inside it) and close the connection.
        The lane opens again on the next write."""
        with self._mutex:
            self._closing = True
            refused = list(self._queue)
            self._queue.clear()
            for t in refused:
                t.state = _DONE
                t.error = StoreClosed("the store was closed before the write could run: "
                                      "nothing of it was written")
        for t in refused:
            assert t.ready is not None
            t.ready.set()
        conn = None
        with self._mutex:
            if not self.holding():
                self._free.wait_for(lambda: not self._busy, self.wait_seconds)
            if self._busy:
                self._close_conn = True  # still running: its holder closes it when done
            else:
                conn, self._conn = self._conn, None
            self._closing = False
        if conn is not None:
            _close(conn)

    # -- a group --------------------------------------------------------------------------
    def _take(self, started: float, size: int) -> _Ticket | None:
        """The next queued command for this group, if the group may grow."""
        with self._mutex:
            if (not self._queue or size >= self.max_size or self._closing
                    or time.monotonic() - started > self.max_seconds):
                return None
            t = self._queue[0]
            if t.work is None:
                return None  # a turn of its own is next: the group ends before it
            self._queue.popleft()
            t.state = _TAKEN
            return t

    def _call(self, t: _Ticket, tx: WriteTx) -> bool:
        """Run ``t``'s work (under its caller's context variables); True if it returned
        (``t.result``), False if it raised (``t.error``, the storage layer's error for a
        driver's). An interrupt of this thread (Ctrl-C) is this thread's: it is raised."""
        work = t.work
        assert work is not None
        try:
            t.result = work(tx) if t.ctx is None else t.ctx.run(work, tx)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            t.error = self._store.mapped(e) if isinstance(e, Exception) else e
            return False
        return True

    def _group(self, first: _Ticket, members: list[_Ticket]) -> None:
        """Run ``first`` and the commands taken behind it (added to ``members``) in one
        transaction and commit; each member's outcome is left on it. A command that raises
        rolls back its own savepoint and gets its own error; an error of the transaction
        itself (a savepoint or the commit refused, the connection lost) fails every command
        of the group not committed with :class:`DatabaseUnavailable` (nothing of them was
        written)."""
        store = self._store
        started = time.monotonic()
        ok: list[_Ticket] = []  # ran without error: committed with the group
        cur = None
        t: _Ticket | None = first
        try:
            conn = self._connection()
            cur = conn.cursor()
            begun = False
            while t is not None:
                if not begun:
                    store.dialect.begin(cur, write=True)
                    begun = True
                tx = WriteTx(store.sql, store.dialect, cur, store.keyring)
                if not ok:  # nothing to keep yet: no savepoint; a failure rolls back all
                    if self._call(t, tx):
                        ok.append(t)
                    else:
                        begun = False
                        conn.rollback()
                else:
                    cur.execute("SAVEPOINT casework_command")
                    if self._call(t, tx):
                        cur.execute("RELEASE SAVEPOINT casework_command")
                        ok.append(t)
                    else:
                        cur.execute("ROLLBACK TO SAVEPOINT casework_command")
                        cur.execute("RELEASE SAVEPOINT casework_command")
                t = self._take(started, len(members))
                if t is not None:
                    members.append(t)
            if ok:
                conn.commit()
        except BaseException as e:  # the transaction failed, or this thread was interrupted
            lost = DatabaseUnavailable(
                f"database unavailable: the transaction failed ({type(e).__name__}); nothing "
                "of the command was written")
            for m in ok:
                m.error, m.result = lost, None
            if t is not None and t.error is None and t not in ok:
                t.error = store.mapped(e) if isinstance(e, Exception) else lost
            try:
                if self._conn is not None:
                    self._conn.rollback()
            except Exception:
                self.drop_connection()
            else:
                if isinstance(e, store._unavailable):
                    self.drop_connection()
            if not isinstance(e, Exception):
                raise
        finally:
            if cur is not None:
                try:
                    cur.close()
                except Exception:
                    pass
            self.groups += 1
            self.commands += len(members)
            self.largest = max(self.largest, len(members))


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass


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
