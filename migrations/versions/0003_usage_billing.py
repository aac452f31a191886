"""usage billing: ledger idempotency keys, Stripe push state and customers, webhook events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orgs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_customer_id", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_orgs_stripe_customer_id", ["stripe_customer_id"])

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("pushed_at", sa.BigInteger(), nullable=True))
    # Rows written before keys existed get a key of their own, so none of them can collide.
    op.execute(
        "UPDATE usage_records SET idempotency_key = 'legacy:' || CAST(id AS VARCHAR) "
        "WHERE idempotency_key IS NULL"
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.alter_column("idempotency_key", existing_type=sa.String(length=200), nullable=False)
        batch_op.create_unique_constraint("uq_usage_records_idempotency_key", ["idempotency_key"])
        batch_op.create_index(batch_op.f("ix_usage_records_pushed_at"), ["pushed_at"], unique=False)

    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=64), nullable=True),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("stripe_created", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_events_org_id"), ["org_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_events_org_id"))
    op.drop_table("stripe_events")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_records_pushed_at"))
        batch_op.drop_constraint("uq_usage_records_idempotency_key", type_="unique")
        batch_op.drop_column("pushed_at")
        batch_op.drop_column("idempotency_key")
    with op.batch_alter_table("orgs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_orgs_stripe_customer_id", type_="unique")
        batch_op.drop_column("stripe_customer_id")
