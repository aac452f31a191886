"""One job as the console's job page shows it: the job, where each stage stands, the plan's quote
against what the ledger billed, the eval report and the artifacts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from services.schemas.artifacts import ArtifactPublic
from services.schemas.jobs import JobPublic

StageState = Literal["done", "running", "failed", "pending", "skipped"]


class StageRowPublic(BaseModel):
    stage: str
    state: StageState
    started_at: int | None  # from the "Stage … started" event
    billed_seconds: float | None  # what the ledger billed the stage for, once it finished


class CostRowPublic(BaseModel):
    stage: str
    quoted_usd: float | None  # the plan's line(s) for the stage at create
    billed_usd: float | None  # the ledger's rows for the stage


class JobOverviewPublic(BaseModel):
    job: JobPublic
    stages: list[StageRowPublic]
    costs: list[CostRowPublic]
    quote_usd: float | None
    billed_usd: float
    report: dict[str, Any]  # services.reports.job_report
    artifacts: list[ArtifactPublic]
