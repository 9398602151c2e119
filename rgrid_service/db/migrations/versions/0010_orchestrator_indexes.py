"""Indexes for the orchestrator's periodic reads, so that an idle orchestrator costs the same
however many runs are stored (issue #13)

- executions (dispatched_at, dispatched_to): the dispatch snapshot's count of each worker's runs
  dispatched within the placement window (`dispatched_at >= now - window`), read on every
  dispatch tick, also the idle ones; without it every tick read the whole table.
- executions (files_expired_at, finished_at): retention's ended runs whose files are still kept
  (`files_expired_at IS NULL AND finished_at <= now - retention`), oldest first: a range of it
  from its start. Through ix_executions_finished_at (or, on SQLite, ix_executions_status) every
  pass walked the runs whose files went long ago. Retention orders by both columns, so that
  PostgreSQL, which does not take `IS NULL` as an equality, sees the index's order as the one asked.

On PostgreSQL each CREATE INDEX holds off writes to its table while it builds (seconds per million
rows): run the upgrade while the grid is stopped, as every migration.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

EXECUTION_INDEXES = {
    "ix_executions_dispatched_at_to": ["dispatched_at", "dispatched_to"],
    "ix_executions_files_expired_finished": ["files_expired_at", "finished_at"],
}


def upgrade() -> None:
    for name, columns in EXECUTION_INDEXES.items():
        op.create_index(name, "executions", columns)


def downgrade() -> None:
    for name in EXECUTION_INDEXES:
        op.drop_index(name, table_name="executions")
