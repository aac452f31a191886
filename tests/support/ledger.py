"""Ledger fixtures for billing tests: an org with jobs and usage rows, written straight to the
database (the usage and billing code under test reads them as the worker leaves them)."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from infra.db import session_scope
from infra.models import Job, Org, UsageRecord, now


def org_of(api_key: str) -> str:
    from services.orgs import authenticate

    with session_scope() as session:
        return authenticate(session=session, authorization=f"Bearer {api_key}").id


def new_job(org_id: str, budget_usd: float | None = None) -> str:
    config = {"model": "test/tiny-lfm2", "training_file": "file-x", "budget_usd": budget_usd}
    with session_scope() as session:
        job = Job(org_id=org_id, status="running", config=config, model="test/tiny-lfm2")
        session.add(job)
        session.flush()
        return job.id


def add_row(
    org_id: str,
    job_id: str | None,
    *,
    stage: str,
    unit: str,
    quantity: float,
    price: float,
    at: int | None = None,
) -> int:
    with session_scope() as session:
        row = UsageRecord(
            org_id=org_id,
            job_id=job_id,
            stage=stage,
            unit=unit,
            quantity=quantity,
            unit_price_usd=price,
            amount_usd=quantity * price,
            created_at=now() if at is None else at,
            idempotency_key=f"test:{secrets.token_hex(8)}",
        )
        session.add(row)
        session.flush()
        return row.id


def rows_of(org_id: str) -> list[UsageRecord]:
    with session_scope() as session:
        return list(
            session.scalars(select(UsageRecord).where(UsageRecord.org_id == org_id).order_by(UsageRecord.id))
        )


def customer_of(org_id: str) -> str | None:
    with session_scope() as session:
        org = session.get(Org, org_id)
        assert org is not None
        return org.stripe_customer_id
