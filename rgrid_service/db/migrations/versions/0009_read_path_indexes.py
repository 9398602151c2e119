"""Indexes for every shape of the API's reads, so that each costs the same however many runs are stored

- executions (tenant_id, status, seq): `GET /v1/executions?status=…`, newest first, and the
  tenant's queued-runs count of the quota check.
- executions (tenant_id, batch_id, seq): a batch's listing, newest first.
- executions (tenant_id, batch_id, status, seq): a batch's listing of one status, and its counts
  per status (`GET /v1/batches/{id}`).
- log_chunks (execution_id, id) instead of (execution_id): a page of a run's log after a cursor,
  in arrival order, without sorting the run's chunks (PostgreSQL; SQLite's index held the rowid).

On PostgreSQL each CREATE INDEX holds off writes to its table while it builds (seconds per million
rows): run the upgrade while the grid is stopped, as every migration.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

EXECUTION_INDEXES = {
    "ix_executions_tenant_status_seq": ["tenant_id", "status", "seq"],
    "ix_executions_tenant_batch_seq": ["tenant_id", "batch_id", "seq"],
    "ix_executions_tenant_batch_status_seq": ["tenant_id", "batch_id", "status", "seq"],
}


def upgrade() -> None:
    for name, columns in EXECUTION_INDEXES.items():
        op.create_index(name, "executions", columns)
    op.create_index("ix_log_chunks_execution_id_id", "log_chunks", ["execution_id", "id"])
    op.drop_index("ix_log_chunks_execution_id", table_name="log_chunks")


def downgrade() -> None:
    op.create_index("ix_log_chunks_execution_id", "log_chunks", ["execution_id"])
    op.drop_index("ix_log_chunks_execution_id_id", table_name="log_chunks")
    for name in EXECUTION_INDEXES:
        op.drop_index(name, table_name="executions")
