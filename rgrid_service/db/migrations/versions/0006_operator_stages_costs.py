"""Operator keys, a run's stage times, what runs cost, the fleet's diff per update

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scope", sa.String(16), nullable=False, server_default="tenant"))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("provisioning_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("cost_eur", sa.Float(), nullable=True))
    with op.batch_alter_table("execution_attempts") as batch:
        batch.add_column(sa.Column("running_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("uploading_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("cost_eur", sa.Float(), nullable=True))
        batch.create_index("ix_execution_attempts_finished_at", ["finished_at"])
    with op.batch_alter_table("fleet_events") as batch:
        batch.add_column(sa.Column("diff", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fleet_events") as batch:
        batch.drop_column("diff")
    with op.batch_alter_table("execution_attempts") as batch:
        batch.drop_index("ix_execution_attempts_finished_at")
        batch.drop_column("cost_eur")
        batch.drop_column("uploading_at")
        batch.drop_column("running_at")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("cost_eur")
        batch.drop_column("provisioning_at")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scope")
