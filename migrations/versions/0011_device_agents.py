"""device agents (real devices that measure an org's artifacts for a profile) and the benchmark
tasks they take under a lease

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_agents",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column(
            "org_id", sa.String(length=40), sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_device_agents_org_id", "device_agents", ["org_id"])
    op.create_table(
        "device_benchmarks",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column(
            "org_id", sa.String(length=40), sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "artifact_id",
            sa.String(length=40),
            sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column(
            "job_id", sa.String(length=40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("filename", sa.String(length=512), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column(
            "agent_id",
            sa.String(length=40),
            sa.ForeignKey("device_agents.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("queued_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_device_benchmarks_org_id", "device_benchmarks", ["org_id"])
    op.create_index("ix_device_benchmarks_artifact_id", "device_benchmarks", ["artifact_id"])
    op.create_index("ix_device_benchmarks_job_id", "device_benchmarks", ["job_id"])
    op.create_index(
        "ix_device_benchmarks_org_profile_status", "device_benchmarks", ["org_id", "profile", "status"]
    )


def downgrade() -> None:
    op.drop_table("device_benchmarks")
    op.drop_table("device_agents")
