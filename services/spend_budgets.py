"""Budgets: an org's total and a job's own cap. A job whose quote exceeds either is refused before
it starts (402); a running job that reaches its cap is stopped by the worker (`budget_exhausted`)."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.job_config import JobConfig
from infra.models import Job, Org, UsageRecord
from services.errors import PaymentRequired
from services.schemas.plans import BudgetCheckPublic

ACTIVE = ("validating_files", "queued", "running")


def spent_usd(session: Session, org_id: str) -> float:
    total = session.scalar(select(func.sum(UsageRecord.amount_usd)).where(UsageRecord.org_id == org_id))
    return float(total or 0.0)


def reserved_usd(session: Session, org_id: str) -> float:
    """What active jobs are still quoted to spend: quote minus what the ledger already holds."""
    jobs = session.scalars(select(Job).where(Job.org_id == org_id, Job.status.in_(ACTIVE))).all()
    return sum(max((j.quote_usd or 0.0) - (j.total_cost_usd or 0.0), 0.0) for j in jobs)


def remaining_usd(session: Session, org: Org) -> float | None:
    if org.budget_usd is None:
        return None
    return org.budget_usd - spent_usd(session, org.id) - reserved_usd(session, org.id)


def check(*, session: Session, org: Org, config: JobConfig, quote_usd: float) -> BudgetCheckPublic:
    remaining = remaining_usd(session, org)
    reason: str | None = None
    code: Literal["job_budget_exceeded", "org_budget_exceeded"] | None = None
    if config.budget_usd is not None and quote_usd > config.budget_usd:
        code = "job_budget_exceeded"
        reason = f"the quote ${quote_usd:.4f} exceeds this job's budget_usd ${config.budget_usd:.4f}"
    elif remaining is not None and quote_usd > remaining:
        code = "org_budget_exceeded"
        reason = f"the quote ${quote_usd:.4f} exceeds the organization's remaining budget ${remaining:.4f}"
    return BudgetCheckPublic(
        job_budget_usd=config.budget_usd,
        org_budget_usd=org.budget_usd,
        org_remaining_usd=None if remaining is None else round(remaining, 6),
        allowed_to_proceed=reason is None,
        code=code,
        reason=reason,
    )


def enforce(result: BudgetCheckPublic) -> None:
    if result.allowed_to_proceed:
        return
    raise PaymentRequired(
        f"{result.reason}; POST /v1/fine_tuning/jobs/plan shows the itemised quote",
        param="budget_usd" if result.code == "job_budget_exceeded" else None,
        code=result.code,
    )


def set_org_budget(*, session: Session, org: Org, usd: float | None) -> Org:
    if usd is not None and usd < 0:
        raise ValueError("a budget is a non-negative amount in USD")
    org.budget_usd = usd
    session.commit()
    return org
