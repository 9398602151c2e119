"""workers.ray_node_id (the worker's Ray node, for `rgrid workers`) and workers.retire_requested_at
(a worker retired by hand: it drains and is deleted, never taken back)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("ray_node_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("retire_requested_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("retire_requested_at")
        batch.drop_column("ray_node_id")
