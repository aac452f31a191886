"""synthetic datasets heart-beat like jobs, so a lost worker's dataset is re-run or failed

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("synthetic_datasets") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("synthetic_datasets") as batch:
        batch.drop_column("attempts")
        batch.drop_column("heartbeat_at")
