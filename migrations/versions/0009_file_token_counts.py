"""Token counts per stored file, base, method and max length, so a plan tokenizes a file once

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file_token_counts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("file_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("max_length", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("longest", sa.Integer(), nullable=False),
        sa.Column("truncated_rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("file_id", "model", "method", "max_length", name="uq_file_token_counts_key"),
    )
    op.create_index("ix_file_token_counts_file_id", "file_token_counts", ["file_id"])


def downgrade() -> None:
    op.drop_index("ix_file_token_counts_file_id", table_name="file_token_counts")
    op.drop_table("file_token_counts")
