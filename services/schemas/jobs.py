from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from domain.job_config import JobConfig

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


# Properties to receive on creation: exactly the job config (OpenAI's fields plus edgetune's own)
class JobCreate(JobConfig):
    pass


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


# Properties to return via API: OpenAI's fine_tuning.job, plus edgetune's stage, cost and config
class JobPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    estimated_finish: int | None = None
    model: str
    fine_tuned_model: str | None
    organization_id: str
    status: JobStatus
    error: JobError | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    training_file: str | None
    validation_file: str | None
    result_files: list[str]
    trained_tokens: int | None
    seed: int
    suffix: str | None
    metadata: dict[str, str] | None
    integrations: list[Any] = []
    # edgetune's own
    task: dict[str, Any] | None
    targets: list[str | dict[str, Any]]  # a profile name, or {profile, select}
    training_type: str
    lora: dict[str, Any]
    gate: dict[str, Any]  # the policy asked for
    eval_gate: dict[str, Any] | None = None  # the decision, with every check's numbers, once made
    stage: str | None
    total_cost_usd: float


class EventPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None


class CheckpointPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Any]
