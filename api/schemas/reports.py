from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.jobs import JobError


# One scored model: base and fine-tuned in transformers, each GGUF artifact in llama.cpp
class ScorePublic(BaseModel):
    subject: str = Field(description="'base', 'fine-tuned' or a device target.")
    runtime: str
    metric: str
    score: float
    ci_low: float = Field(description="Bootstrap 95% confidence interval, low end.")
    ci_high: float
    n: int = Field(description="Held-out rows scored.")
    parse_rate: float | None


class LossPointPublic(BaseModel):
    step: int
    train_loss: float


# GET /v1/fine_tuning/jobs/{id}/report: the evidence behind the gate; filled in as stages finish
class JobReportPublic(BaseModel):
    object: Literal["fine_tuning.job.report"] = "fine_tuning.job.report"
    job_id: str
    model: str
    status: str
    error: JobError | None
    metric: str | None = Field(description="The headline metric the scores are in.")
    loss_curve: list[LossPointPublic]
    scores: list[ScorePublic]
    per_class: dict[str, dict[str, dict[str, float]]] = Field(
        description="Classification only: model -> label -> precision, recall, f1, support."
    )
    gate: dict[str, Any] | None = Field(description="The gate's verdict with every check, once it ran.")
    synth_report: dict[str, Any] | None = Field(description="The synthesize stage's report, if it ran.")
