"""executions.requirements: the requirements.txt a run asked for (`rgrid run --requirements`), whose
packages the worker installs into a layer on the run's runtime image (issue #12). NULL: none.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("requirements", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("requirements")
