"""Shared fixtures: a fresh database per test, on SQLite and on PostgreSQL.

``db_url`` is parametrized over both backends. The PostgreSQL side creates a
throwaway database per test run and a fresh schema per test. Outside CI a
test that needs PostgreSQL is skipped when the server cannot be reached;
under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from casework import Engine, FrozenClock

ROOT = Path(__file__).resolve().parent.parent
PETITION = ROOT / "workflows" / "petition.yaml"
COMPLAINT = ROOT / "workflows" / "complaint.yaml"
PG_ADMIN = os.environ.get("CASEWORK_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except Exception as e:  # any failure to connect
        return str(e)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run; dropped at the end."""
    problem = _pg_available()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is needed under CI and is not reachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    import psycopg

    name = f"casework_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_pg_schema(db: str) -> str:
    """A new, empty schema in PostgreSQL database ``db``: the engine URL that uses it."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = db.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or a new schema on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cases.db'}"
    return new_pg_schema(request.getfixturevalue("pg_database"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cases.db'}"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(scope="session")
def exact_petition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped petition workflow with its periods counted exactly (a duration from the
    instant) instead of as the law counts days: for the tests that compute the scheduler's
    instants by adding durations (statutory counting has its own tests)."""
    out = tmp_path_factory.mktemp("exact") / "petition.yaml"
    text = PETITION.read_text(encoding="utf-8")
    assert "counting: statutory\n" in text
    out.write_text(text.replace("counting: statutory\n", "counting: exact\n"), encoding="utf-8")
    return out


@pytest.fixture
def engine(sqlite_url: str, clock: FrozenClock) -> Iterator[Engine]:
    """An engine on a fresh SQLite file with the shipped workflows."""
    with Engine(sqlite_url, [PETITION, COMPLAINT], clock=clock) as e:
        yield e


@pytest.fixture
def any_engine(db_url: str, clock: FrozenClock) -> Iterator[Engine]:
    """An engine on each backend in turn (SQLite file, PostgreSQL schema)."""
    with Engine(db_url, [PETITION, COMPLAINT], clock=clock) as e:
        yield e


def assert_reports_agree(engine: Engine, workflow: str, **kw: Any) -> None:
    """The report read from the maintained figures is the report counted from the events."""
    a = engine.report(workflow, source="figures", **kw)
    b = engine.report(workflow, source="events", **kw)
    assert (a.source, b.source) == ("figures", "events")

    def close(x: Any, y: Any) -> bool:
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, tuple) and isinstance(y, tuple):
            return len(x) == len(y) and all(close(p, q) for p, q in zip(x, y, strict=True))
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            return abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y)) + 1e-3 * isinstance(x, float)
        return bool(x == y)

    for part in ("totals", "rows", "overdue", "escalations", "time_in_state", "resolution",
                 "reassignments"):
        got, want = getattr(a, part), getattr(b, part)
        assert close(dict(got) if isinstance(got, dict) else got,
                     dict(want) if isinstance(want, dict) else want), (
            f"{part} ({kw}): from the figures {got}, from the events {want}")


def assert_figures_intact(engine: Engine) -> None:
    """The maintained report figures of every loaded workflow that declares a report are
    what the events give (recomputed from them)."""
    checks = engine.rebuild_figures(check=True)
    assert all(c.ok for c in checks), [c.differences for c in checks]
