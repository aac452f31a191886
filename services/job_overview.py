"""Everything the console's job page shows about one job, read in one place from what the REST
routes read (services.jobs, services.reports, services.artifacts) plus the stage timeline and the
plan's quote set against the ledger, which the REST API leaves to the client to join."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.lists import STAGES
from infra.models import Job, JobEvent, Org, UsageRecord
from services import artifacts, reports
from services.jobs import get_job, to_public
from services.schemas.job_overview import CostRowPublic, JobOverviewPublic, StageRowPublic, StageState

MAX_ARTIFACTS = 100  # a job has one per target (at most 8) plus one adapter per GGUF target


def _events_with_data(session: Session, job: Job) -> list[JobEvent]:
    stmt = (
        select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.data.is_not(None)).order_by(JobEvent.seq)
    )
    return list(session.scalars(stmt))


def _stage_state(job: Job, stage: str) -> StageState:
    if stage in (job.stages_done or []):
        return "done"
    if job.stage == stage:  # where the job is, or where it stopped (failed or cancelled there)
        return "running" if job.status == "running" else "failed"
    return "skipped" if job.status in ("succeeded", "failed", "cancelled") else "pending"


def stage_rows(job: Job, events: list[JobEvent], billed: list[UsageRecord]) -> list[StageRowPublic]:
    """One row per pipeline stage in order; a stage a job never ran (synthesize for an uploaded
    file, everything after a failure) is `skipped` once the job has ended."""
    started = {(e.data or {}).get("stage"): e.created_at for e in events if e.message.startswith("Stage ")}
    seconds: dict[str, float] = {}
    for r in billed:
        if r.unit.endswith("_second"):
            seconds[r.stage] = seconds.get(r.stage, 0.0) + r.quantity
    return [
        StageRowPublic(
            stage=s, state=_stage_state(job, s), started_at=started.get(s), billed_seconds=seconds.get(s)
        )
        for s in STAGES
    ]


def cost_rows(events: list[JobEvent], billed: list[UsageRecord]) -> list[CostRowPublic]:
    """The quote's lines (from the create event, as planned then) beside the ledger, per stage."""
    quote: dict[str, Any] = next((e.data["quote"] for e in events if e.data and "quote" in e.data), {})
    quoted: dict[str, float] = {}
    for item in quote.get("items", []):
        quoted[item["stage"]] = quoted.get(item["stage"], 0.0) + float(item["amount_usd"])
    spent: dict[str, float] = {}
    for r in billed:
        spent[r.stage] = spent.get(r.stage, 0.0) + r.amount_usd
    order = [*quoted, *(s for s in spent if s not in quoted)]
    return [CostRowPublic(stage=s, quoted_usd=quoted.get(s), billed_usd=spent.get(s)) for s in order]


def job_overview(*, session: Session, org: Org, job_id: str) -> JobOverviewPublic:
    """Another org's job id is the same 404 as an unknown one (services.jobs.get_job)."""
    job = get_job(session=session, org=org, job_id=job_id)
    events = _events_with_data(session, job)
    billed = list(session.scalars(select(UsageRecord).where(UsageRecord.job_id == job.id)))
    rows, _ = artifacts.list_artifacts(
        session=session, org=org, job_id=job.id, after=None, limit=MAX_ARTIFACTS
    )
    return JobOverviewPublic(
        job=to_public(job),
        stages=stage_rows(job, events, billed),
        costs=cost_rows(events, billed),
        quote_usd=job.quote_usd,
        billed_usd=round(job.total_cost_usd, 6),
        report=reports.job_report(session=session, org=org, job_id=job.id),
        artifacts=[artifacts.to_public(a) for a in rows],
    )
