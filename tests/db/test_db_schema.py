"""The schema is built by Alembic from empty, matches the models, and timestamps are naive UTC."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from rgrid_service import lifecycle
from rgrid_service.db.models import Base, Execution
from rgrid_service.db.session import MIGRATIONS_DIR, upgrade_schema

TABLES = {
    "executions",
    "execution_attempts",
    "execution_outputs",
    "log_chunks",
    "workers",
    "worker_heartbeats",
    "tenants",
    "api_keys",
}


def utcnow_naive() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def test_migrations_build_full_schema_from_empty(db_url, engine):
    tables = set(inspect(engine).get_table_names())
    assert TABLES <= tables, f"missing tables: {sorted(TABLES - tables)}"
    assert "alembic_version" in tables

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head == "0012"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]

    # Running the upgrade again is a no-op (every service calls it at start).
    upgrade_schema(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]


def test_migrated_schema_matches_models(engine):
    """No drift between the hand-kept migration and the models, on this database."""
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_db_now_is_naive_utc(engine):
    with engine.connect() as conn:
        now = lifecycle.db_now(conn)
    assert isinstance(now, datetime)
    assert now.tzinfo is None
    assert abs(now - utcnow_naive()) < timedelta(minutes=5), now


def test_server_default_timestamps_are_utc(engine, make_execution):
    """created_at comes from the database default: it must be UTC too (the PG cluster is UTC+14)."""
    execution_id = make_execution()
    with engine.connect() as conn:
        created = conn.execute(select(Execution.created_at).where(Execution.id == execution_id)).scalar_one()
    assert created.tzinfo is None
    assert abs(created - utcnow_naive()) < timedelta(minutes=5), created


def test_an_existing_sqlite_grid_with_runs_upgrades_to_head(tmp_path):
    """A table rebuild (SQLite batch migration) under rows that other tables reference: with foreign
    keys enforced during the migration, dropping the old table failed."""
    from alembic import command

    from rgrid_service.db.session import make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0004")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name) VALUES ('t', 't')"))
        conn.execute(text(
            "INSERT INTO executions (id, tenant_id, status, script, args, env, runtime, timeout_seconds, inputs,"
            " attempt, max_attempts, log_bytes, log_truncated) VALUES ('ex-1', 't', 'succeeded', 'a.py', '[]',"
            " '{}', 'python:3.11', 10, '[]', 1, 3, 0, 0)"))
        conn.execute(text("INSERT INTO execution_attempts (execution_id, attempt, worker_id) VALUES ('ex-1', 1, 'w-1')"))
    engine.dispose()
    upgrade_schema(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, seq FROM executions")).all() == [("ex-1", 1)]
        assert conn.execute(text("SELECT count(*) FROM execution_attempts")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    engine.dispose()
