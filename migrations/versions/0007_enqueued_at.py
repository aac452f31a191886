"""jobs and synthetic datasets record when their queue message was sent, so a queued one whose
message was lost is queued again by the reaper

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows queued before this migration have none; the reaper falls back to created_at for them.
    for table in ("jobs", "synthetic_datasets"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("enqueued_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in ("synthetic_datasets", "jobs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("enqueued_at")
