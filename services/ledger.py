"""Writing the usage ledger: the one insert every charge goes through (job stages in
services/jobs.py, synthetic datasets in services/synthetic_datasets.py)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.db import dialect_insert
from infra.models import UsageRecord


def usage_key(owner_id: str, stage: str, unit: str) -> str:
    """One ledger row per (job or dataset, stage, unit): a retried stage finds its row."""
    return f"{owner_id}:{stage}:{unit}"


def append_usage(
    session: Session,
    *,
    org_id: str,
    job_id: str | None,
    stage: str,
    unit: str,
    quantity: float,
    unit_price: float,
    key: str,
) -> tuple[UsageRecord, bool]:
    """Append one ledger row unless a row with `key` exists; returns (the row, inserted now).

    ON CONFLICT DO NOTHING rather than catching IntegrityError: a concurrent writer of the same key
    must not roll back the caller's transaction (which also records the stage as done)."""
    stmt = dialect_insert(session, UsageRecord).values(
        org_id=org_id,
        job_id=job_id,
        stage=stage,
        unit=unit,
        quantity=quantity,
        unit_price_usd=unit_price,
        amount_usd=quantity * unit_price,
        idempotency_key=key,
    )
    stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"])
    inserted = session.scalar(stmt.returning(UsageRecord.id)) is not None
    row = session.scalar(select(UsageRecord).where(UsageRecord.idempotency_key == key))
    assert row is not None  # inserted now, or by the writer that won the race
    return row, inserted
