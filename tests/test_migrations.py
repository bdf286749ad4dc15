"""Alembic migrations: the schema they build is the models' schema; mismatches are refused."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from casework import Engine, StoreError
from casework.persistence import models
from casework.persistence.migrate import alembic_config, current_revision, head_revision, upgrade
from sqlalchemy import text

from tests.conftest import PETITION
from tests.helpers import connection, database, row_dicts, run_cli, sql, table


def test_migrations_build_exactly_the_schema_of_the_models(db_url: str) -> None:
    upgrade(db_url)
    with database(db_url) as db:
        with db.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), models.metadata)
        assert diffs == []
        assert current_revision(db) == head_revision()


def test_an_empty_database_is_created_at_the_newest_revision(db_url: str) -> None:
    with Engine(db_url, [PETITION]) as e, database(e) as db:
        assert current_revision(db) == head_revision()


def test_a_database_upgraded_by_the_command_is_accepted_by_the_engine(db_url: str) -> None:
    result = run_cli("--db", db_url, "db", "upgrade")
    assert result.code == 0, result.output
    with Engine(db_url, [PETITION]) as e:
        case = e.open_case("petition", {"petitioner_name": "A", "channel": "visit",
                                        "source": "city", "summary": "s"}, actor="clerk:li")
        assert e.get_case(case.id).state == "registered"


def test_tables_without_a_revision_are_refused_with_the_command_to_run(sqlite_url: str) -> None:
    with database(sqlite_url) as db:
        models.metadata.create_all(db)
    with pytest.raises(StoreError, match=r"run: python run.py db upgrade"):
        Engine(sqlite_url, [PETITION])


def test_a_schema_newer_than_the_code_is_refused(db_url: str) -> None:
    upgrade(db_url)
    sql(db_url, "UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    with pytest.raises(StoreError, match="upgraded by newer code"):
        Engine(db_url, [PETITION])


def test_db_current_reports_both_revisions(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    result = run_cli("--db", sqlite_url, "db", "current")
    assert result.code == 0
    assert f"database: {head_revision()}; code: {head_revision()}" in result.output


def test_an_older_schema_is_refused_until_upgraded_and_keeps_its_cases(db_url: str) -> None:
    upgrade(db_url, "0001")
    with connection(db_url) as conn:  # a case written by the code of revision 0001
        conn.execute(text(
            "INSERT INTO cases (id, workflow, version, state, final, data, escalation_level, "
            "opened_at, updated_at, row_version, last_seq, last_hash, clocks, at_risk) VALUES "
            "('c1', 'petition', 'v', 'archived', true, '{}', 0, '2026-01-01 00:00:00', "
            "'2026-02-01 00:00:00', 1, 1, 'h', '{}', false)"))
        conn.execute(text(
            "INSERT INTO events (case_id, seq, kind, name, at, changes, details, prev_hash, hash) "
            "VALUES ('c1', 1, 'transition', 'archive', '2026-02-01 00:00:00', '{}', '{}', 'p', 'h')"))
    with pytest.raises(StoreError, match=r"older than this code.*run: python run.py db upgrade"):
        Engine(db_url, [PETITION])
    upgrade(db_url)
    with Engine(db_url, [PETITION]) as e, database(e) as db:
        assert current_revision(db) == head_revision()
        [(closed,)] = sql(e, "SELECT closed_at FROM cases WHERE id = 'c1'")
        assert str(closed).startswith("2026-02-01")


def test_rekeying_events_keeps_every_event_and_chain_both_ways(db_url: str) -> None:
    """0006 drops the events' surrogate id for the (case, seq) key; down and up again, the
    histories are the same and their chains verify."""
    with Engine(db_url, [PETITION]) as e:
        ids = [e.open_case("petition", {"petitioner_name": f"P{i}", "channel": "visit",
                                        "source": "city", "summary": "s"}, actor="clerk:li").id
               for i in range(3)]
        e.fire(ids[0], "accept", actor="triage:zhao")
        before = {c: [(ev.seq, ev.name, ev.hash) for ev in e.history(c)] for c in ids}
    # Going below the later revisions drops what they added (each event's key id and
    # command digest, each case's seal and due columns...): the rows are kept aside here and
    # put back after the way up, so that the histories can be verified under their key.
    kept = {name: row_dicts(db_url, name) for name in ("cases", "events")}
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "0005")
    rows = sql(db_url, "SELECT id, case_id, seq FROM events ORDER BY id")
    assert len(rows) == 4 and len({r[0] for r in rows}) == 4
    command.upgrade(cfg, "head")
    with connection(db_url) as conn:
        for name, keys in (("cases", ("id",)), ("events", ("case_id", "seq"))):
            t = table(conn, name)
            for row in kept[name]:
                conn.execute(t.update().where(*(t.c[k] == row[k] for k in keys))
                             .values({k: v for k, v in row.items() if k not in keys}))
    with Engine(db_url, [PETITION]) as e:
        assert {c: [(ev.seq, ev.name, ev.hash) for ev in e.history(c)] for c in ids} == before
        assert e.verify() == []
