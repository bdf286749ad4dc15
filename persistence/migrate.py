"""Schema migrations with Alembic, and the check that the schema matches the code.

``upgrade(url)`` brings a database to the newest revision (``run.py db upgrade``).
:func:`check_schema` is what the engine runs at start: an empty database is
created at the newest revision; a database at an older or newer revision is
refused with a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from . import models

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaMismatch(Exception):
    """The database's schema revision is not the one this code was written for."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema of the database at ``url``."""
    command.upgrade(alembic_config(url), revision)


def check_schema(engine: Engine, lock: Callable[[Connection], None] | None = None) -> str:
    """Create an empty database at the newest revision; refuse one at another revision.

    ``lock`` takes a database-wide lock inside the creating transaction, so engines that
    start together on an empty database create it once and all go on.
    """
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return head
    if current is None:
        with engine.begin() as conn:
            if lock is not None:
                lock(conn)
            ctx = MigrationContext.configure(conn)
            current = ctx.get_current_revision()
            tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
            if current is None and not tables:
                # A new database: the tables as the models define them, stamped at the head
                # revision (the same schema the migrations build; a test compares the two).
                models.metadata.create_all(conn)
                ctx.stamp(ScriptDirectory.from_config(alembic_config(str(engine.url))), head)
                return head
            if current == head:
                return head  # another process created it while this one waited
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()}
    if current is None:
        raise SchemaMismatch(
            f"the database at {engine.url!r} has casework tables but no schema revision; "
            "run: python run.py db upgrade")
    if current in known:
        raise SchemaMismatch(
            f"the database schema is at revision {current}, older than this code ({head}); "
            "run: python run.py db upgrade")
    raise SchemaMismatch(
        f"the database schema is at revision {current}, which this code does not know (it "
        f"expects {head}): the database was upgraded by newer code; run that version of casework")
