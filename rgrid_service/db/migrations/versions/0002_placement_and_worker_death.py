"""placement target, batch parallelism, worker death

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch_op:
        batch_op.add_column(sa.Column("batch_parallel", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("dispatched_to", sa.String(length=64), nullable=True))
    with op.batch_alter_table("workers") as batch_op:
        batch_op.add_column(sa.Column("dead_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("dead_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("execution_attempts") as batch_op:
        batch_op.add_column(sa.Column("running_on_worker", sa.Integer(), nullable=True))
    op.create_index("ix_executions_status_worker", "executions", ["status", "worker_id"])


def downgrade() -> None:
    op.drop_index("ix_executions_status_worker", table_name="executions")
    with op.batch_alter_table("execution_attempts") as batch_op:
        batch_op.drop_column("running_on_worker")
    with op.batch_alter_table("workers") as batch_op:
        batch_op.drop_column("dead_reason")
        batch_op.drop_column("dead_at")
    with op.batch_alter_table("executions") as batch_op:
        batch_op.drop_column("dispatched_to")
        batch_op.drop_column("batch_parallel")
