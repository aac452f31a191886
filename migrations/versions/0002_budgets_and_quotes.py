"""budgets and quotes: orgs.budget_usd, jobs.quote_usd

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orgs", sa.Column("budget_usd", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("quote_usd", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "quote_usd")
    op.drop_column("orgs", "budget_usd")
