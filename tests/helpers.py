"""What several test modules share: running the command line, and the test's own way
into an engine's database.

Tests go through the engine's public API; where the point of a test is to look at the
stored rows directly or to change them behind the engine's back (tampering with a
history, a timer's or a notice's row), it opens a connection of its own on the engine's
``database_url`` (SQLite or PostgreSQL) here, with SQLAlchemy, as any other program
reading that database would. Tables are reflected from the database itself, so their
columns come back typed (times as naive UTC ``datetime``) on either backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from casework import Engine
from casework.cli import Defaults, cli
from click.testing import CliRunner
from sqlalchemy.engine import Connection, Row
from sqlalchemy.pool import NullPool

# -- the command line ------------------------------------------------------------------------

class CliResult(NamedTuple):
    """A finished command: its exit status, what it wrote to stdout and to stderr."""

    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.out + self.err


def run_cli(*args: str | Path, defaults: Defaults | None = None) -> CliResult:
    """Run ``casework ARGS`` in this process, as the console script would.

    Without ``defaults``: the packaged settings, pictures under ``./var``. An exception
    that escapes the command (a traceback for the user) fails the test.
    """
    result = CliRunner().invoke(cli, [str(a) for a in args], obj=defaults or Defaults(),
                                catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


# -- the database ----------------------------------------------------------------------------

Database = Engine | str  # an engine, or a database URL (an engine's ``database_url``)


def url_of(target: Database) -> str:
    """The SQLAlchemy URL of ``target`` (a plain ``postgresql://`` URL goes through psycopg)."""
    url = target.database_url if isinstance(target, Engine) else target
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextmanager
def database(target: Database) -> Iterator[sa.Engine]:
    """A SQLAlchemy engine of the test's own on ``target``'s database (no pool)."""
    db = sa.create_engine(url_of(target), poolclass=NullPool)
    try:
        yield db
    finally:
        db.dispose()


@contextmanager
def connection(target: Database) -> Iterator[Connection]:
    """A connection in one transaction, committed when the block ends."""
    with database(target) as db, db.begin() as conn:
        yield conn


def table(conn: Connection, name: str, /) -> sa.Table:
    """The table ``name`` as the database declares it."""
    return sa.Table(name, sa.MetaData(), autoload_with=conn)


def sql(target: Database, statement: str, /, **params: Any) -> list[Row[Any]]:
    """Run one SQL statement (``:name`` parameters) in its own transaction; its rows."""
    with connection(target) as conn:
        result = conn.execute(sa.text(statement), params)
        return list(result) if result.returns_rows else []


def _select(conn: Connection, name: str, order_by: tuple[str, ...],
            where: dict[str, Any]) -> sa.Select[Any]:
    t = table(conn, name)
    q = sa.select(t).order_by(*(t.c[c] for c in order_by))
    for col, value in where.items():
        q = q.where(t.c[col].is_(None) if value is None else t.c[col] == value)
    return q


def rows(target: Database, name: str, /, *order_by: str, **where: Any) -> list[Row[Any]]:
    """The rows of table ``name`` whose columns equal ``where``, ordered by ``order_by``."""
    with connection(target) as conn:
        return list(conn.execute(_select(conn, name, order_by, where)))


def row_dicts(target: Database, name: str, /, *order_by: str,
              **where: Any) -> list[dict[str, Any]]:
    """:func:`rows` as plain dicts, column name to value."""
    with connection(target) as conn:
        return [dict(m) for m in conn.execute(_select(conn, name, order_by, where)).mappings()]


def count(target: Database, name: str, /, **where: Any) -> int:
    """How many rows of table ``name`` have columns equal to ``where``."""
    return len(rows(target, name, **where))


def naive(when: datetime) -> datetime:
    """An aware instant as the database stores times (naive UTC)."""
    return when.astimezone(UTC).replace(tzinfo=None)


# -- the tables the scheduler tests read ---------------------------------------------------

def timer_rows(target: Database, case_id: str | None = None, **where: Any) -> list[Row[Any]]:
    """Rows of the timers table (every column), oldest id first; ``case_id`` narrows them
    to one case's."""
    if case_id is not None:
        where["case_id"] = case_id
    return rows(target, "timers", "id", **where)


def event_rows(target: Database, **where: Any) -> list[Row[Any]]:
    """Rows of the events table (every column): those with a notice in the order their
    transactions wrote the notices (the outbox's ids), then the rest by case and number."""
    with connection(target) as conn:
        e, o = table(conn, "events"), table(conn, "outbox")
        q = (sa.select(e).outerjoin(o, (o.c.case_id == e.c.case_id) & (o.c.seq == e.c.seq))
             .order_by(o.c.id.is_(None), o.c.id, e.c.case_id, e.c.seq))
        for col, value in where.items():
            q = q.where(e.c[col] == value)
        return list(conn.execute(q))


def report_rows(target: Database) -> list[Row[Any]]:
    """Rows of the reports table, oldest first."""
    return rows(target, "reports", "id")
