"""synthetic datasets: POST /v1/synthetic_datasets runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "synthetic_datasets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("task", sa.JSON(), nullable=False),
        sa.Column("teacher", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("training_file", sa.String(length=40), nullable=True),
        sa.Column("validation_file", sa.String(length=40), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("total_cost_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["training_file"], ["files.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["validation_file"], ["files.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("synthetic_datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_synthetic_datasets_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_synthetic_datasets_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("synthetic_datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_synthetic_datasets_status"))
        batch_op.drop_index(batch_op.f("ix_synthetic_datasets_org_id"))
    op.drop_table("synthetic_datasets")
