"""executions.seq: a unique, increasing creation order for listings (newest first)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    # Executions that exist get numbers in the order the listing used to show them.
    op.execute(
        "UPDATE executions SET seq = o.n FROM "
        "(SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM executions) AS o "
        "WHERE executions.id = o.id"
    )
    with op.batch_alter_table("executions") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.drop_index("ix_executions_tenant_created")
        batch.create_index("ix_executions_seq", ["seq"], unique=True)
        batch.create_index("ix_executions_tenant_seq", ["tenant_id", "seq"])
    if postgres:
        # The models render nextval() into each INSERT; the column default covers any other writer.
        op.execute("CREATE SEQUENCE executions_seq OWNED BY executions.seq")
        op.execute("SELECT setval('executions_seq', (SELECT coalesce(max(seq), 0) + 1 FROM executions), false)")
        op.execute("ALTER TABLE executions ALTER COLUMN seq SET DEFAULT nextval('executions_seq')")


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_index("ix_executions_tenant_seq")
        batch.drop_index("ix_executions_seq")
        batch.create_index("ix_executions_tenant_created", ["tenant_id", "created_at"])
        batch.drop_column("seq")  # on PostgreSQL the sequence it owns goes with it
