"""``search``: first pages of case search and worklists over many stored cases, beside
hand-written SQL on the same indexes (``bench/README.md``).

The database is filled behind the engine: one case per state goes through the engine (the
template of its data, clocks and row), then copies of those rows under new ids, units,
handlers, leaders and deadlines are written with ``executemany`` (SQLite) and ``COPY``
(PostgreSQL), with their holders in ``assignments``; 100,000 cases first, measured, then
filled up to 1,000,000 and measured again. Four questions are timed through the engine and,
call by call in alternating order, as one hand-written query each (the floor):

* ``due in 7 days, my unit``: ``engine.cases(unit=U, due_after=now, due_before=now + 7d)``;
* ``overdue, all units``: ``engine.cases(overdue=True)``;
* ``my worklist``: ``engine.worklist("handler:H@U")``;
* ``count, my unit``: ``engine.cases(unit=U, count=True, limit=1)``.

Every engine page is checked against its floor (the same cases in the same order, the same
count): a wrong query cannot look fast.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any, Protocol

from casework import Engine, FrozenClock
from casework.persistence import Store

from tests.petition_steps import PATHS, drive, open_petition

from .base import Ctx, Progress, Table, patched, percentile, ratios, spread, target
from .db import (
    PETITION,
    Throwaway,
    connect,
    dumps,
    insert_sql,
    pg_one,
    remove_db,
    server_started,
    server_version,
    wait_for_server,
)

NOW = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # the engine's frozen clock
WEEK = timedelta(days=7)
DAY = 86_400.0
FAR = datetime(9999, 12, 31)  # the stored next deadline of a case on which none runs
PAGE = 50
BATCH = 50_000
BACKENDS = ("sqlite", "postgresql")
QUERIES = ("due in 7 days, my unit", "overdue, all units", "my worklist", "count, my unit")
PAGES = QUERIES[:3]
RATIO_TARGET = 2.0  # the engine within 2x of its floor
P99_TARGET_MS = 10.0  # a first page at the large size
GROWTH_TARGET = 2.0  # 10x the stored cases may cost at most 2x (flat; a scan would be ~10x)

# 20 units of a county, the first ones the busiest (weights 1 / rank^0.8: the largest holds
# 16% of the cases, the smallest 2.5%); 12 handlers and 3 leaders each; 4 registering clerks.
UNITS = ("county_court", "public_security", "procuratorate", "justice_bureau",
         "land_resources", "housing_construction", "human_resources", "civil_affairs",
         "education", "health", "transport", "ecology_environment", "market_regulation",
         "agriculture", "water_resources", "xinzhuang_town", "dongcheng_street",
         "xicheng_street", "nanhu_town", "beishan_town")
UNIT_WEIGHTS = tuple(1 / (i + 1) ** 0.8 for i in range(len(UNITS)))
HANDLERS = {u: tuple(f"h{i:02d}{k:02d}" for k in range(12)) for i, u in enumerate(UNITS)}
LEADERS = {u: tuple(f"l{i:02d}{k}" for k in range(3)) for i, u in enumerate(UNITS)}
CLERKS = ("li", "he", "guo", "lin")
SOURCES, SOURCE_WEIGHTS = ("central", "province", "city", "direct", "carried_over"), (5, 15, 25, 45, 10)
CHANNELS = ("visit", "letter", "phone", "online")
CONCERNS = ("police", "procuratorate", "court", "justice_bureau", "township", "other")

# Per cent of the stored cases in each state: 45% open, 55% closed.
STATES = (("registered", 3), ("accepted", 3), ("handling.investigating", 17),
          ("handling.suspended", 1), ("handling.decided", 5), ("replied", 4),
          ("follow_up.visited", 2), ("follow_up.continued_work", 4), ("review.requested", 3),
          ("review.answered", 1), ("review.rereview_requested", 1), ("review.rereviewed", 1),
          ("archived", 48), ("referred", 3), ("not_accepted", 3), ("diverted", 1))
FINAL_PATHS = {"archived": ("accept", "assign", "decide", "reply", "visit_satisfied", "archive"),
               "referred": ("refer",), "not_accepted": ("not_accept",), "diverted": ("divert",)}
# A running deadline's length, and the share of cases past it (days).
DEADLINES = {"triage": (15, 0.10), "handling": (60, 0.15), "review_answer": (30, 0.10),
             "rereview_answer": (30, 0.10)}

CASE_COLS = ("id", "workflow", "version", "state", "final", "data", "escalation_level",
             "opened_at", "updated_at", "row_version", "last_seq", "last_hash", "clocks",
             "at_risk", "overdue_since", "party_key", "closed_at", "seal", "unit", "next_due_at",
             "next_deadline")
ASSIGN_COLS = ("case_id", "slot", "who", "kind", "until")
TIMES = tuple(CASE_COLS.index(c) for c in ("opened_at", "updated_at", "overdue_since",
                                             "closed_at", "next_due_at"))
FLAGS = tuple(CASE_COLS.index(c) for c in ("final", "at_risk"))


# -- the rows ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """One case the engine brought to ``state``: what its copies take over."""

    state: str
    final: bool
    version: str
    data: dict[str, Any]
    clocks: dict[str, Any]
    deadline: str | None  # the deadline running in this state (None: none runs)
    row_version: int
    last_seq: int
    last_hash: str


def templates(work: Path) -> list[tuple[Template, int]]:
    """One case per state of :data:`STATES` through the engine on a scratch file; each
    template with its weight."""
    db = work / "templates.db"
    remove_db(db)
    engine = Engine(f"sqlite:///{db}", [PETITION], clock=FrozenClock(NOW - timedelta(days=30)),
                    key_file=work / "templates.key")
    try:
        for state, _ in STATES:
            case = open_petition(engine)
            drive(engine, case.id, *(FINAL_PATHS.get(state) or PATHS[state]))
    finally:
        engine.close()
    conn = sqlite3.connect(db)
    try:
        rows = {r[0]: r for r in conn.execute(
            "SELECT state, final, version, data, clocks, next_deadline, row_version, last_seq, "
            "last_hash FROM cases")}
    finally:
        conn.close()
        remove_db(db)
    import orjson

    out = []
    for state, weight in STATES:
        s, final, version, data, clocks, deadline, rv, seq, head = rows[state]
        out.append((Template(s, bool(final), version, orjson.loads(data), orjson.loads(clocks),
                             deadline, rv, seq, head), weight))
    return out


ID_START_MS = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)


class Maker:
    """Copies of the templates with their own ids, people, units and deadlines.

    The ids are UUIDv7s as the engine makes them (32 hex digits, a millisecond count first),
    their time part ascending in the order the copies are made, so that the fill appends to
    the primary keys instead of writing all over them."""

    def __init__(self, tpls: list[tuple[Template, int]], seed: int) -> None:
        self.rng = random.Random(seed)
        self.tpls = [t for t, _ in tpls]
        self.cum = list(accumulate(w for _, w in tpls))
        self.unit_cum = list(accumulate(UNIT_WEIGHTS))
        self.source_cum = list(accumulate(SOURCE_WEIGHTS))
        self.clocks = {t.state: dumps(t.clocks) for t in self.tpls}
        self.now = NOW.replace(tzinfo=None)
        self.made = 0

    def case(self) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        """One case row (native values, in :data:`CASE_COLS` order) and its holders."""
        rng, now = self.rng, self.now
        t = rng.choices(self.tpls, cum_weights=self.cum)[0]
        self.made += 1
        ms = ID_START_MS + self.made
        cid = f"{ms << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62):032x}"
        data = dict(t.data)
        clerk = rng.choice(CLERKS)
        data.update(first_handler=clerk, channel=rng.choice(CHANNELS),
                    source=rng.choices(SOURCES, cum_weights=self.source_cum)[0],
                    concerns=rng.choice(CONCERNS))
        holders = [(cid, "first_handler", clerk, "person", None)]
        unit: str | None = None
        if "unit" in data:  # assigned: the four fixes name a leader, a handler and a unit
            unit = rng.choices(UNITS, cum_weights=self.unit_cum)[0]
            handler, leader = rng.choice(HANDLERS[unit]), rng.choice(LEADERS[unit])
            data.update(unit=unit, handler=handler, leader=leader)
            holders += [(cid, "handler", handler, "person", None),
                        (cid, "leader", leader, "person", None),
                        (cid, "lead_unit", f"@{unit}", "unit", None)]
            if rng.random() < 0.15:
                helper = rng.choice(UNITS)
                if helper != unit:
                    data["assisting_units"] = [helper]
                    holders.append((cid, "assisting_units", f"@{helper}", "unit", None))
        clocks = self.clocks[t.state]
        due: datetime | None = None
        overdue_since: datetime | None = None
        level = 0
        closed: datetime | None = None
        if t.deadline is not None:
            days, late = DEADLINES[t.deadline]
            ahead = rng.uniform(-45 if days == 60 else -20, 0) if rng.random() < late \
                else rng.uniform(0, days)
            due = (now + timedelta(days=ahead)).replace(microsecond=0)
            opened = due - timedelta(days=days + (rng.uniform(0.5, 10) if days == 60 else
                                                  rng.uniform(40, 120) if days == 30 else 0))
            stamp = due.isoformat() + "+00:00"
            clock = {**t.clocks[t.deadline], "due": stamp, "end": stamp}
            if due < now:
                overdue_since = due
                if t.deadline == "handling":  # escalated on the breach, again every 10 days
                    level = min(3, 1 + int((now - due).total_seconds() // (10 * DAY)))
                    clock["breaches"] = level
            clocks = dumps({**t.clocks, t.deadline: clock})
        elif t.final:
            opened = now - timedelta(days=rng.uniform(60, 1000))
            closed = min(now, opened + timedelta(days=rng.uniform(20, 120)))
        else:
            opened = now - timedelta(days=rng.uniform(70, 200))
        opened = opened.replace(microsecond=rng.randrange(1_000_000))
        updated = closed or min(now, opened + timedelta(days=rng.uniform(1, 60)))
        row = (cid, "petition", t.version, t.state, t.final, dumps(data), level, opened, updated,
               t.row_version, t.last_seq, t.last_hash, clocks,
               (not t.final) and rng.random() < 0.04, overdue_since, None, closed, None, unit,
               due or FAR, t.deadline)
        return row, holders


# -- the databases -----------------------------------------------------------------------------

class Filler(Protocol):
    name: str

    def write(self, cases: list[tuple[Any, ...]], holders: list[tuple[Any, ...]]) -> None: ...

    def finish(self) -> None: ...


def _sqlite_dt(v: datetime | None) -> str | None:
    return None if v is None else v.isoformat(sep=" ", timespec="microseconds")


# The fill drops the secondary indexes of the two tables and makes them again afterwards from
# their own stored definitions (one sort each instead of a million scattered inserts): the
# schema the engine made, index for index.

class SQLiteFiller:
    name = "sqlite"

    def __init__(self, db: Path) -> None:
        self.conn = connect(db, "OFF", foreign_keys=False)
        self.conn.execute("PRAGMA cache_size=-400000")  # 400 MB for making the indexes
        self.ins_case = insert_sql("cases", CASE_COLS)
        self.ins_holder = insert_sql("assignments", ASSIGN_COLS)
        self.indexes = self.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('cases', 'assignments')").fetchall()
        for name, _ in self.indexes:
            self.conn.execute(f"DROP INDEX {name}")

    def write(self, cases: list[tuple[Any, ...]], holders: list[tuple[Any, ...]]) -> None:
        def row(r: tuple[Any, ...]) -> list[Any]:
            out = list(r)
            for i in TIMES:
                out[i] = _sqlite_dt(out[i])
            for i in FLAGS:
                out[i] = int(out[i])
            return out

        self.conn.execute("BEGIN")
        self.conn.executemany(self.ins_case, [row(r) for r in cases])
        self.conn.executemany(self.ins_holder, holders)
        self.conn.execute("COMMIT")

    def finish(self) -> None:
        for _, sql in self.indexes:
            self.conn.execute(sql)
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


class PostgresFiller:
    """``COPY`` per batch, one transaction each; the foreign-key triggers are off for the
    fill's own session (the rows are whole by construction). A batch cut off by a server
    restart is written again once the server is back."""

    name = "postgresql"

    def __init__(self, url: str, progress: Progress) -> None:
        self.url, self.progress = url, progress
        self.copy_cases = f"COPY cases ({', '.join(CASE_COLS)}) FROM STDIN"
        self.copy_holders = f"COPY assignments ({', '.join(ASSIGN_COLS)}) FROM STDIN"
        self.conn = self._connect()
        self.indexes = self.conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename IN ('cases', 'assignments') AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint)").fetchall()
        for name, _ in self.indexes:
            self.conn.execute(f"DROP INDEX {name}")
        self.conn.commit()

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.url)
        conn.execute("SET session_replication_role = replica")
        return conn

    def _again(self, what: str, e: Exception, attempt: int) -> None:
        if attempt == 5:
            raise e
        self.progress(f"  postgresql: {type(e).__name__} while {what}; once more")
        try:
            self.conn.close()
        except Exception:
            pass
        wait_for_server(self.url, self.progress)
        self.conn = self._connect()

    def write(self, cases: list[tuple[Any, ...]], holders: list[tuple[Any, ...]]) -> None:
        import psycopg

        for attempt in range(6):
            try:
                if attempt and self.conn.execute("SELECT 1 FROM cases WHERE id = %s",
                                                 (cases[0][0],)).fetchone():
                    self.conn.rollback()
                    return  # the batch was committed before the connection went
                with self.conn.cursor() as cur:
                    with cur.copy(self.copy_cases) as cp:
                        for r in cases:
                            cp.write_row(r)
                    with cur.copy(self.copy_holders) as cp:
                        for r in holders:
                            cp.write_row(r)
                self.conn.commit()
                return
            except psycopg.OperationalError as e:
                self._again("writing a batch", e, attempt)

    def finish(self) -> None:
        import psycopg

        for attempt in range(6):
            try:
                for _, sql in self.indexes:
                    self.conn.execute(sql.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))
                self.conn.commit()
                self.conn.close()
                pg_one(self.url, "VACUUM ANALYZE cases", "VACUUM ANALYZE assignments")
                return
            except psycopg.OperationalError as e:
                self._again("making the indexes", e, attempt)


def fill(maker: Maker, n: int, fillers: Sequence[Filler], progress: Progress) -> dict[str, float]:
    """Add ``n`` cases to every database; seconds spent making them and per database."""
    spent = dict.fromkeys(["generate", *(f.name for f in fillers)], 0.0)
    done = 0
    while done < n:
        t = time.perf_counter()
        cases, holders = [], []
        for _ in range(min(BATCH, n - done)):
            row, hs = maker.case()
            cases.append(row)
            holders += hs
        spent["generate"] += time.perf_counter() - t
        for f in fillers:
            t = time.perf_counter()
            f.write(cases, holders)
            spent[f.name] += time.perf_counter() - t
        done += len(cases)
        if done % (BATCH * 4) == 0 or done == n:
            progress(f"  {done:,} of {n:,} cases")
    for f in fillers:
        t = time.perf_counter()
        f.finish()
        spent[f.name] += time.perf_counter() - t
    return spent


# -- the floors --------------------------------------------------------------------------------

_COLS = ", ".join(CASE_COLS)  # the worklist reads whole rows: its rules read the clocks
_LISTED = ", ".join(c for c in CASE_COLS if c != "clocks")  # a search shows no clocks


def floor_sql(backend: str) -> dict[str, str]:
    """The hand-written query of each question, in the backend's own words (the partial
    indexes' condition as they are declared, ``?`` or ``%s`` for the values), reading the
    columns the engine reads."""
    open_ = "final = 0" if backend == "sqlite" else "NOT final"
    p = "?" if backend == "sqlite" else "%s"
    order = f"ORDER BY next_due_at, id LIMIT {PAGE}"
    return {
        QUERIES[0]: f"SELECT {_LISTED} FROM cases WHERE {open_} AND unit = {p} "
                    f"AND next_due_at >= {p} AND next_due_at < {p} {order}",
        QUERIES[1]: f"SELECT {_LISTED} FROM cases WHERE {open_} AND overdue_since IS NOT NULL "
                    f"{order}",
        QUERIES[2]: f"SELECT {_COLS} FROM cases c WHERE {open_} AND EXISTS (SELECT 1 FROM "
                    f"assignments a WHERE a.case_id = c.id AND a.who IN ({p}, {p})) {order}",
        QUERIES[3]: f"SELECT count(*) FROM cases WHERE {open_} AND unit = {p}",
    }


class Floor(Protocol):
    sql: dict[str, str]

    def run(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...

    def explain(self, sql: str, args: Any) -> list[str]: ...

    def close(self) -> None: ...


class SQLiteFloor:
    def __init__(self, db: Path) -> None:
        self.conn = connect(db, "NORMAL")
        self.sql = floor_sql("sqlite")

    def run(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        args = tuple(_sqlite_dt(a) if isinstance(a, datetime) else a for a in args)
        return self.conn.execute(self.sql[query], args).fetchall()

    def explain(self, sql: str, args: Any) -> list[str]:
        return [r[3] for r in self.conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]

    def close(self) -> None:
        self.conn.close()


class PostgresFloor:
    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.sql = floor_sql("postgresql")

    def run(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self.conn.execute(self.sql[query], args).fetchall()

    def explain(self, sql: str, args: Any) -> list[str]:
        return [r[0] for r in self.conn.execute(f"EXPLAIN {sql}", args)]

    def close(self) -> None:
        self.conn.close()


# -- timing ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ask:
    """One call of a question: for the unit U (and its handler H)."""

    unit: str
    handler: str


def asks(n: int) -> list[Ask]:
    """``n`` calls going round every unit (each unit's handlers in turn), so the busiest and
    the quietest units are all in the percentiles."""
    return [Ask(UNITS[i % len(UNITS)], HANDLERS[UNITS[i % len(UNITS)]][(i // len(UNITS)) % 12])
            for i in range(n)]


def engine_call(engine: Engine, query: str, a: Ask) -> list[str] | int:
    now = NOW
    if query == QUERIES[0]:
        page = engine.cases(unit=a.unit, due_after=now, due_before=now + WEEK, limit=PAGE)
    elif query == QUERIES[1]:
        page = engine.cases(overdue=True, limit=PAGE)
    elif query == QUERIES[2]:
        page = engine.worklist(f"handler:{a.handler}@{a.unit}", limit=PAGE)
    else:
        total = engine.cases(unit=a.unit, count=True, limit=1).total
        assert total is not None
        return total
    return [c.id for c in page.items]


def floor_args(query: str, a: Ask) -> tuple[Any, ...]:
    now = NOW.replace(tzinfo=None)
    if query == QUERIES[0]:
        return (a.unit, now, now + WEEK)
    if query == QUERIES[1]:
        return ()
    if query == QUERIES[2]:
        return (a.handler, f"@{a.unit}")
    return (a.unit,)


def floor_call(floor: Floor, query: str, a: Ask) -> list[str] | int:
    rows = floor.run(query, floor_args(query, a))
    return int(rows[0][0]) if query == QUERIES[3] else [r[0] for r in rows]


@dataclass
class Timing:
    """Per run: p50 and p99 (ms) of the engine and of the floor."""

    engine_p50: list[float]
    engine_p99: list[float]
    floor_p50: list[float]
    floor_p99: list[float]


def time_queries(engine: Engine, floor: Floor, calls: int, repeat: int, backend: str,
                 progress: Progress, restarted: Callable[[], bool] = lambda: False,
                 recover: Callable[[], Floor] | None = None
                 ) -> tuple[dict[str, Timing], list[str]]:
    """Each question ``calls`` times per run, engine and floor call by call (which goes first
    alternates); every answer compared with its floor's.

    A run under which the PostgreSQL server restarted (``restarted()``, or a call that lost
    its connection) is thrown away and made again with the floor ``recover()`` gives, after
    the cache is warm again."""
    out = {q: Timing([], [], [], []) for q in QUERIES}
    problems: list[str] = []

    def warm() -> None:  # the first calls compile and cache, the pages come into memory
        for q in QUERIES:
            for a in asks(2 * len(UNITS)):
                engine_call(engine, q, a)
                floor_call(floor, q, a)

    warm()
    for rep in range(repeat):
        for q in QUERIES:
            for attempt in range(6):
                try:
                    eng, flo, bad = _one_run(engine, floor, q, calls, rep, backend)
                    if not restarted():
                        break
                    why = "the server restarted during the run"
                except Exception as e:
                    if recover is None or attempt == 5:
                        raise
                    why = type(e).__name__
                if recover is None:
                    break
                progress(f"  {backend} {q}: {why}; measuring again")
                floor = recover()
                warm()
            else:
                raise RuntimeError(f"{backend} {q}: the server kept restarting")
            problems += bad[:max(0, 20 - len(problems))]
            tm = out[q]
            tm.engine_p50.append(percentile(eng, 50))
            tm.engine_p99.append(percentile(eng, 99))
            tm.floor_p50.append(percentile(flo, 50))
            tm.floor_p99.append(percentile(flo, 99))
            progress(f"  run {rep + 1}/{repeat} {backend:<10} {q:<24} engine p50 "
                     f"{tm.engine_p50[-1]:6.2f} ms p99 {tm.engine_p99[-1]:6.2f} ms; floor p50 "
                     f"{tm.floor_p50[-1]:6.2f} ms p99 {tm.floor_p99[-1]:6.2f} ms")
    return out, problems


def _one_run(engine: Engine, floor: Floor, q: str, calls: int, rep: int,
             backend: str) -> tuple[list[float], list[float], list[str]]:
    """One run of question ``q``: ms per call of the engine and of the floor, differences."""
    pc = time.perf_counter
    eng: list[float] = []
    flo: list[float] = []
    bad: list[str] = []
    for i, a in enumerate(asks(calls)):
        for side in ((0, 1) if (i + rep) % 2 == 0 else (1, 0)):
            t = pc()
            if side == 0:
                got = engine_call(engine, q, a)
                eng.append((pc() - t) * 1000)
            else:
                want = floor_call(floor, q, a)
                flo.append((pc() - t) * 1000)
        if got != want:
            bad.append(f"{backend} {q} ({a.unit}, {a.handler}): the engine gave {_short(got)}, "
                       f"the floor {_short(want)}")
    return eng, flo, bad


def _short(v: list[str] | int) -> str:
    if isinstance(v, int):
        return str(v)
    return f"{len(v)} cases starting {v[:2]}"


class _Recording:
    """A database cursor that notes each statement and its values, then runs it."""

    def __init__(self, cur: Any, seen: list[tuple[str, Any]]) -> None:
        self._cur, self._seen = cur, seen

    def execute(self, sql: str, args: Any = None) -> Any:
        if sql.lstrip().upper().startswith("SELECT"):
            self._seen.append((sql, args))
        return self._cur.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


@contextmanager
def recorded_sql() -> Iterator[list[tuple[str, Any]]]:
    """The statements the engine's reads run, with their values (its behaviour unchanged:
    ``Store.read`` is wrapped to hand out a cursor that notes them, then put back)."""
    seen: list[tuple[str, Any]] = []
    read = Store.read

    @contextmanager
    def recording(self: Store) -> Iterator[Any]:
        with read(self) as tx:
            tx.cur = _Recording(tx.cur, seen)
            yield tx

    with patched(Store, read=recording):
        yield seen


def plans(engine: Engine, floor: Floor) -> dict[str, dict[str, list[str]]]:
    """The query plan of each engine statement and of each floor, for one unit."""
    a = Ask(UNITS[0], HANDLERS[UNITS[0]][0])
    out: dict[str, dict[str, list[str]]] = {}
    for q in QUERIES:
        with recorded_sql() as seen:
            engine_call(engine, q, a)
        out[q] = {"floor": floor.explain(floor.sql[q], _bound(floor, floor_args(q, a)))}
        distinct = {(stmt, repr(args)): (stmt, args) for stmt, args in seen}
        for n, (stmt, args) in enumerate(distinct.values()):
            out[q][f"engine {n + 1}"] = floor.explain(stmt, args)
    return out


def _bound(floor: Floor, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if isinstance(floor, SQLiteFloor):
        return tuple(_sqlite_dt(a) if isinstance(a, datetime) else a for a in args)
    return args


# -- the suite ---------------------------------------------------------------------------------

@dataclass
class Backend:
    name: str
    url: str
    engine: Engine
    floor: Callable[[], Floor]
    filler: Callable[[], Filler]
    server: str | None = None  # PostgreSQL: the libpq URL to watch for restarts


class Watch:
    """Whether the PostgreSQL server restarted since the last look; a new floor once it is
    back. Every floor it made is closed with :meth:`close`."""

    def __init__(self, b: Backend, progress: Progress) -> None:
        self.b, self.progress = b, progress
        self.floors = [b.floor()]
        self.started = server_started(b.server) if b.server else None

    def restarted(self) -> bool:
        if self.b.server is None:
            return False
        now = server_started(self.b.server)
        gone, self.started = now != self.started, now
        return gone

    def recover(self) -> Floor:
        assert self.b.server is not None
        wait_for_server(self.b.server, self.progress)
        self.started = server_started(self.b.server)
        self.floors.append(self.b.floor())
        return self.floors[-1]

    def close(self) -> None:
        for f in self.floors:
            try:
                f.close()
            except Exception:
                pass


def measure(b: Backend, calls: int, repeat: int, progress: Progress, explain: bool
            ) -> tuple[dict[str, Timing], list[str], dict[str, dict[str, list[str]]]]:
    """The timings on one backend, the differences found, and (``explain``) the plans."""
    w = Watch(b, progress)
    try:
        timing, bad = time_queries(b.engine, w.floors[0], calls, repeat, b.name, progress,
                                   w.restarted, w.recover if b.server else None)
        return timing, bad, plans(b.engine, w.floors[-1]) if explain else {}
    finally:
        w.close()


def run(ctx: Ctx) -> dict[str, Any]:
    small, large = ctx.pick(ctx.args.search_sizes, (100_000, 1_000_000), (10_000, 100_000))
    repeat = ctx.repeat(3)
    calls = ctx.pick(ctx.args.calls, 100, 40)
    names = BACKENDS if ctx.args.backend == "both" else (ctx.args.backend,)
    clock = FrozenClock(NOW)
    key_file = ctx.work / "bench.key"
    backends: list[Backend] = []
    pg: Throwaway | None = None
    db = ctx.work / "search.db"
    results: dict[str, Any] = {}
    problems: list[str] = []
    load: dict[int, dict[str, float]] = {}
    sizes_mb: dict[int, dict[str, float]] = {}
    explained: dict[str, dict[str, dict[str, list[str]]]] = {}
    server = None
    try:
        if "sqlite" in names:
            remove_db(db)
            url = f"sqlite:///{db}"
            backends.append(Backend("sqlite", url, Engine(url, [PETITION], clock=clock,
                                                          key_file=key_file),
                                    lambda: SQLiteFloor(db), lambda: SQLiteFiller(db)))
        if "postgresql" in names:
            pg = Throwaway(ctx.args.admin_url, prefix="casework_search")
            pg_url = pg.url
            backends.append(Backend("postgresql", pg.engine_url,
                                    Engine(pg.engine_url, [PETITION], clock=clock,
                                           key_file=key_file),
                                    lambda: PostgresFloor(pg_url),
                                    lambda: PostgresFiller(pg_url, ctx.progress), pg_url))
            server = server_version(pg.url)
        ctx.progress("templates: one case per state through the engine")
        maker = Maker(templates(ctx.work), seed=20261102)
        stored = 0
        for size in (small, large):
            ctx.progress(f"filling {', '.join(names)} up to {size:,} cases")
            load[size] = fill(maker, size - stored, [b.filler() for b in backends], ctx.progress)
            stored = size
            sizes_mb[size] = _sizes(backends, db, pg)
            for b in backends:
                timing, bad, plan = measure(b, calls, repeat, ctx.progress, size == large)
                if plan:
                    explained[b.name] = plan
                problems += bad
                results.setdefault(b.name, {})[str(size)] = {
                    q: {"engine_p50": spread(t.engine_p50), "engine_p99": spread(t.engine_p99),
                        "floor_p50": spread(t.floor_p50), "floor_p99": spread(t.floor_p99),
                        "ratio_p50": ratios(t.engine_p50, t.floor_p50),
                        "ratio_p99": ratios(t.engine_p99, t.floor_p99)}
                    for q, t in timing.items()}
        counts = _counts(backends[0].engine)
    finally:
        for b in backends:
            b.engine.close()
        if pg is not None:
            pg.drop()
        remove_db(db)
    targets = []
    for name in names:
        lo, hi = results[name][str(small)], results[name][str(large)]
        for q in QUERIES:
            r = hi[q]["ratio_p50"]["median"]
            targets.append(target(f"{name}: {q}: engine / floor", r, f"<= {RATIO_TARGET:g}",
                                  r <= RATIO_TARGET))
            if q in PAGES:
                p99 = hi[q]["engine_p99"]["median"]
                targets.append(target(f"{name}: {q}: p99", p99, f"< {P99_TARGET_MS:g} ms",
                                      p99 < P99_TARGET_MS))
            g = hi[q]["engine_p50"]["median"] / lo[q]["engine_p50"]["median"]
            targets.append(target(f"{name}: {q}: growth", g, f"<= {GROWTH_TARGET:g}",
                                  g <= GROWTH_TARGET))
    targets.append(target("the engine's answers agree with the floors'", len(problems),
                          "no difference", not problems))
    return {"config": {"sizes": [small, large], "repeat": repeat, "calls": calls, "page": PAGE,
                       "backends": list(names), "now": NOW.isoformat(), "units": len(UNITS)},
            "postgresql": server, "load_s": {str(k): v for k, v in load.items()},
            "db_mb": {str(k): v for k, v in sizes_mb.items()}, "stored": counts,
            "floors": {b: floor_sql(b) for b in names}, "plans": explained,
            "results": results, "problems": problems, "targets": targets}


def _sizes(backends: list[Backend], db: Path, pg: Throwaway | None) -> dict[str, float]:
    out = {}
    for b in backends:
        if b.name == "sqlite":
            out[b.name] = db.stat().st_size / 1e6
        elif pg is not None:
            out[b.name] = pg_one(pg.url, "SELECT pg_database_size(current_database())")[0] / 1e6
    return out


def _counts(engine: Engine) -> dict[str, int]:
    """What the large database holds, through the engine: open, overdue, per unit."""
    total = engine.cases(count=True, limit=1).total or 0
    overdue = engine.cases(overdue=True, count=True, limit=1).total or 0
    biggest = engine.cases(unit=UNITS[0], count=True, limit=1).total or 0
    smallest = engine.cases(unit=UNITS[-1], count=True, limit=1).total or 0
    return {"open": total, "overdue": overdue, "open, busiest unit": biggest,
            "open, quietest unit": smallest}


def table(res: dict[str, Any]) -> Table:
    cfg = res["config"]
    small, large = cfg["sizes"]
    st = res["stored"]
    t = Table([f"{small:,} then {large:,} petition cases (45% open), {cfg['units']} units; "
               f"at {large:,}: {st['open']:,} open, {st['overdue']:,} overdue, the busiest unit "
               f"{st['open, busiest unit']:,} open, the quietest {st['open, quietest unit']:,}"
               + (f"; PostgreSQL {res['postgresql']}" if res["postgresql"] else ""),
               "load s: " + "; ".join(f"{int(k):,}: " + ", ".join(f"{n} {v:.0f}" for n, v in d.items())
                                      for k, d in res["load_s"].items())
               + "; size MB: " + "; ".join(f"{int(k):,}: " + ", ".join(f"{n} {v:,.0f}"
                                                                        for n, v in d.items())
                                           for k, d in res["db_mb"].items()),
               f"a first page of {cfg['page']} (count: limit 1 and the total); per run "
               f"{cfg['calls']} calls of each, engine and floor call by call, each unit in turn; "
               f"{cfg['repeat']} runs; ms"], fine=True)
    for b in cfg["backends"]:
        by_size = res["results"][b]
        for q in QUERIES:
            t.add(f"{b}: {q}")
            for size in (small, large):
                f = by_size[str(size)][q]
                name = f"{b}: {q}"
                big = size == large
                t.add(f"  {size:,}: engine p50", f["engine_p50"], "ms")
                t.add(f"  {size:,}: engine p99", f["engine_p99"], "ms",
                      f"{name}: p99" if big and q in PAGES else "")
                t.add(f"  {size:,}: floor p50", f["floor_p50"], "ms")
                t.add(f"  {size:,}: floor p99", f["floor_p99"], "ms")
                t.add(f"  {size:,}: engine / floor, p50", f["ratio_p50"], "",
                      f"{name}: engine / floor" if big else "")
            lo, hi = by_size[str(small)][q], by_size[str(large)][q]
            grow = hi["engine_p50"]["median"] / lo["engine_p50"]["median"]
            fgrow = hi["floor_p50"]["median"] / lo["floor_p50"]["median"]
            t.add(f"  engine p50 {large:,} / {small:,}", grow, "", f"{b}: {q}: growth")
            t.add(f"  floor p50 {large:,} / {small:,}", fgrow)
    t.add("differences between the engine and the floors", len(res["problems"]), "",
          "the engine's answers agree with the floors'")
    for b, qs in res["floors"].items():
        t.notes.append(f"floors ({b}):")
        t.notes += [f"  {q}: {sql}" for q, sql in qs.items()]
    for b, qs in res["plans"].items():
        t.notes.append(f"query plans at {large:,} ({b}; the floor, then each statement the engine ran):")
        for q, ps in qs.items():
            for who, lines in ps.items():
                t.notes.append(f"  {q}, {who}: " + " | ".join(x.strip() for x in lines))
    t.notes += [f"  ! {p}" for p in res["problems"]]
    return t
