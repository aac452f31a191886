from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from domain.job_config import TaskSpec
from infra.settings import StructuredOutput
from services.schemas.jobs import JobError

DatasetStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


# Teacher settings a request may give; what it leaves out comes from EDGETUNE_TEACHER_* (by
# default the bundled SmolLM2-135M-Instruct, served by llama.cpp for the run)
class TeacherOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        default=None, pattern=r"^https?://", description="OpenAI-compatible API root, e.g. https://host/v1."
    )
    model: str | None = Field(default=None, min_length=1, max_length=256)
    api_key: str | None = Field(
        default=None, max_length=512, description="Stored for the run, never returned."
    )
    max_concurrency: int = Field(default=2, ge=1, le=16, description="Teacher requests in flight at once.")
    max_total_tokens: int | None = Field(default=None, ge=1000, description="Token budget of the run.")
    max_cost_usd: float | None = Field(default=None, gt=0, description="Cost budget of the run, in USD.")
    structured_output: StructuredOutput | None = Field(
        default=None,
        description="How the round trip asks this teacher for an answer of a JSON Schema: "
        "'json_schema' (OpenAI's response_format; vLLM and llama-server read it too), 'json_object' "
        "(with a `schema`, as llama-cpp-python's server reads it) or 'off'. Default: the "
        "operator's teacher setting, or 'json_schema' for a base_url of the request.",
    )

    @field_validator("structured_output")
    @classmethod
    def _only_for_own_teacher(
        cls, v: StructuredOutput | None, info: ValidationInfo
    ) -> StructuredOutput | None:
        # The operator's teacher (or the bundled one) is asked the way its server reads, set by the
        # operator: a tenant chooses only for the teacher it names.
        if v is not None and not info.data.get("base_url"):
            raise ValueError("applies to a teacher the request names: give teacher.base_url with it")
        return v


# The teacher as returned: everything but the key
class TeacherPublic(BaseModel):
    base_url: str | None
    model: str | None
    max_concurrency: int
    max_total_tokens: int | None
    max_cost_usd: float | None
    structured_output: StructuredOutput | None = None


# Shared properties of a synthetic dataset
class SyntheticDatasetBase(BaseModel):
    task: TaskSpec
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Same seed, teacher and spec: same rows.")


# Properties to receive on creation
class SyntheticDatasetCreate(SyntheticDatasetBase):
    model_config = ConfigDict(extra="forbid")

    teacher: TeacherOptions = Field(default_factory=TeacherOptions)


# Properties to return via API; training_file / validation_file plug straight into
# POST /v1/fine_tuning/jobs
class SyntheticDatasetPublic(SyntheticDatasetBase):
    id: str
    object: Literal["synthetic_dataset"] = "synthetic_dataset"
    created_at: int
    started_at: int | None
    finished_at: int | None
    status: DatasetStatus
    progress: dict[str, Any]
    report: dict[str, Any] | None
    error: JobError | None
    training_file: str | None
    validation_file: str | None
    teacher: TeacherPublic
    total_cost_usd: float
