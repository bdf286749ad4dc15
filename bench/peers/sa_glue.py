"""Hand-written persistence for the library peers: SQLAlchemy Core on a SQLite file.

What a team gluing a state-machine library to a database would write: a ``cases`` table
(state, the case data as JSON, a row version) and a ``history`` table (one row per step,
with the changes as JSON), one ``Connection`` for the process, and one transaction per
command: ``BEGIN IMMEDIATE`` (the write lock before the read, as casework takes it), read
the case, let the library move it, ``UPDATE ... WHERE id = ? AND version = ?``, ``INSERT``
the history row, ``COMMIT``. The pragmas are casework's: WAL, the ``synchronous`` level
under test, foreign keys on, a busy timeout.

The ``BEGIN IMMEDIATE`` recipe is the one SQLAlchemy documents for pysqlite (take the
transaction away from the driver, emit ``BEGIN`` in the ``begin`` event).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)

from .common import FINAL, Refused

BUSY_TIMEOUT_MS = 10_000


def tables(kind: str = "cases") -> tuple[Table, Table]:
    """The case table and the history table, on their own ``MetaData``.

    ``kind="cases"``: the case's state and its data as JSON (the state-machine peers).
    ``kind="workflows"``: the state and the serialized workflow (the SpiffWorkflow peer).
    """
    md = MetaData()
    payload = (Column("data", JSON, nullable=False) if kind == "cases"
               else Column("serialization", Text, nullable=False))
    case_table = Table(
        kind, md,
        Column("id", String(32), primary_key=True),
        Column("state", String(64), nullable=False, index=True),
        payload,
        Column("version", Integer, nullable=False),
        Column("opened_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
    )
    history = Table(
        "history", md,
        Column("id", Integer, primary_key=True),
        Column("case_id", String(32), ForeignKey(f"{kind}.id"), nullable=False),
        Column("seq", Integer, nullable=False),
        Column("name", String(64), nullable=False),
        Column("from_state", String(64)),
        Column("to_state", String(64), nullable=False),
        Column("actor", String(64), nullable=False),
        Column("role", String(32)),
        Column("at", DateTime, nullable=False),
        Column("changes", JSON, nullable=False),
        UniqueConstraint("case_id", "seq"),
    )
    return case_table, history


def sqlite_engine(db: Path, synchronous: str) -> Engine:
    """An engine on ``db`` with casework's pragmas and ``BEGIN IMMEDIATE`` transactions."""
    eng = create_engine(f"sqlite:///{db}",
                        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(eng, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver must not BEGIN on its own
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON",
                       f"busy_timeout={BUSY_TIMEOUT_MS}"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(eng, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return eng


class SqlStore:
    """One connection to a fresh file with the case table and the history table."""

    def __init__(self, db: Path, synchronous: str, kind: str = "cases") -> None:
        self.engine = sqlite_engine(db, synchronous)
        self.table, self.history = tables(kind)
        self.payload = "data" if kind == "cases" else "serialization"
        assert self.table.metadata is not None
        self.table.metadata.create_all(self.engine)
        self.conn = self.engine.connect()
        t = self.table
        self.load_case = select(t).where(t.c.id == bindparam("id"))
        self.save_case = (update(t).where(t.c.id == bindparam("b_id"))
                          .where(t.c.version == bindparam("b_version")))
        self.add_case = insert(t)
        self.add_history = insert(self.history)

    def add(self, state: str, payload: Any, role: str, who: str, now: datetime,
            values: dict[str, Any]) -> str:
        """A new case and its ``open`` history row, in one transaction; its id."""
        cid = uuid.uuid4().hex
        with self.conn.begin():
            self.conn.execute(self.add_case, {"id": cid, "state": state, self.payload: payload,
                                              "version": 1, "opened_at": now, "updated_at": now})
            self.conn.execute(self.add_history, {"case_id": cid, "seq": 1, "name": "open",
                                                 "from_state": None, "to_state": state,
                                                 "actor": who, "role": role, "at": now,
                                                 "changes": values})
        return cid

    def load(self, case_id: str) -> Any:
        """The case's row (in the caller's transaction)."""
        row = self.conn.execute(self.load_case, {"id": case_id}).one_or_none()
        if row is None:
            raise Refused(f"no case {case_id}")
        return row

    def save(self, row: Any, trigger: str, from_state: str, state: str, payload: Any, role: str,
             who: str, now: datetime, changes: dict[str, Any]) -> None:
        """Write the case back, checking its version, and insert the step's history row (in
        the caller's transaction)."""
        done = self.conn.execute(self.save_case, {
            "b_id": row.id, "b_version": row.version, "state": state, self.payload: payload,
            "version": row.version + 1, "updated_at": now})
        if done.rowcount != 1:
            raise Refused(f"case {row.id} was changed by another command")
        self.conn.execute(self.add_history, {
            "case_id": row.id, "seq": row.version + 1, "name": trigger, "from_state": from_state,
            "to_state": state, "actor": who, "role": role, "at": now, "changes": changes})

    def check(self) -> dict[str, int]:
        t = self.table
        with self.conn.begin():
            n = self.conn.execute(select(func.count()).select_from(t)).scalar_one()
            final = self.conn.execute(select(func.count()).select_from(t)
                                      .where(t.c.state == FINAL)).scalar_one()
            h = self.conn.execute(select(func.count()).select_from(self.history)).scalar_one()
        return {"cases": n, "final": final, "history": h}

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()
