"""the elastic fleet: worker lifecycle fields and the fleet's event log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("server_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("active_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(), nullable=True))
    op.create_index("ix_workers_state", "workers", ["state"])
    op.create_table(
        "fleet_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.create_index("ix_fleet_events_at", "fleet_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_fleet_events_at", table_name="fleet_events")
    op.drop_table("fleet_events")
    op.drop_index("ix_workers_state", table_name="workers")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("active_at")
        batch.drop_column("server_id")
