"""Workers hold only their own credential; secrets sealed at rest; per-tenant quotas; retention.

- workers.token_revoked_at: when the worker's token stopped being honoured (retired, dead, deleted).
- executions.env_sealed: the env values, encrypted with a key only the control plane holds, and
  removed when the run ends; executions.env_keys: their names (not secret, shown by the API).
  executions.env is kept for rows written before this revision, and emptied by it.
- executions.files_expired_at: when retention deleted the run's inputs and outputs from the store.
- blobs.last_used_at: the last time a run used the blob (retention keeps blobs in use).
- tenant_quotas: a tenant's limits where they differ from the defaults in the settings.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("token_revoked_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("env_sealed", sa.Text(), nullable=True))
        batch.add_column(sa.Column("env_keys", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("files_expired_at", sa.DateTime(), nullable=True))
    op.create_index("ix_executions_finished_at", "executions", ["finished_at"])
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("max_queued_runs", sa.Integer(), nullable=True),
        sa.Column("max_running_runs", sa.Integer(), nullable=True),
        sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True),
    )
    # Names of the env values already stored; the values of ended runs go (they are not needed).
    conn = op.get_bind()
    executions = sa.table("executions", sa.column("id", sa.String), sa.column("env", sa.JSON),
                          sa.column("env_keys", sa.JSON), sa.column("status", sa.String))
    rows = conn.execute(sa.select(executions.c.id, executions.c.env, executions.c.status)
                        .where(executions.c.env.isnot(None))).all()
    for row in rows:
        env = row.env or {}
        values = {"env_keys": sorted(env)}
        if row.status not in ("uploading", "queued", "running"):
            values["env"] = {}
        conn.execute(sa.update(executions).where(executions.c.id == row.id).values(**values))


def downgrade() -> None:
    op.drop_table("tenant_quotas")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("last_used_at")
    op.drop_index("ix_executions_finished_at", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("files_expired_at")
        batch.drop_column("env_keys")
        batch.drop_column("env_sealed")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("token_revoked_at")
