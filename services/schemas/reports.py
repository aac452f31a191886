from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from services.schemas.jobs import JobError


# One scored model: base (bare and prompted) and fine-tuned in transformers, each artifact in its
# runtime (a GGUF shipped with a grammar twice: "<target> (no grammar)" and "<target>", as shipped)
class ScorePublic(BaseModel):
    subject: str = Field(
        description="'base', 'base-prompted', 'fine-tuned', a device target, or '<target> (no grammar)'."
    )
    runtime: str = Field(description="'transformers', 'llama.cpp', 'llama.cpp + grammar', 'onnxruntime'.")
    metric: str
    score: float
    ci_low: float = Field(description="Bootstrap 95% confidence interval, low end.")
    ci_high: float
    n: int = Field(description="Held-out rows scored.")
    parse_rate: float | None
    shots: int | None = Field(
        default=None, description="base-prompted only: training examples in its prompt (k)."
    )
    host_measurements: dict[str, Any] | None = Field(
        default=None, description="Artifacts: decode speed and memory measured on the worker host."
    )
    device_measurements: dict[str, Any] | None = Field(
        default=None, description="Artifacts: the same measured by a device agent of the target's profile."
    )
    device_prediction: dict[str, Any] | None = Field(
        default=None, description="Artifacts: the device model's decode speed and memory on the device."
    )


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
    prompting: dict[str, Any] | None = Field(
        default=None,
        description="Bare base, prompted base (k shots) and fine-tuned, and what fine-tuning added over "
        "prompting ('added_over_prompting', 'summary'); null before evaluation or for a DPO job.",
    )
    probe: dict[str, Any] | None = Field(
        default=None, description="The general-ability probe, base vs fine-tuned."
    )
    gate: dict[str, Any] | None = Field(description="The gate's verdict with every check, once it ran.")
    synth_report: dict[str, Any] | None = Field(description="The synthesize stage's report, if it ran.")
    checkpoint_selection: dict[str, Any] | None = Field(
        default=None,
        description="Held-out scores measured during training ([step, score] pairs), the step shipped "
        "(best_step), whether it stopped early and whether the best weights were restored.",
    )
    frontiers: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="best_within_budget targets: each quantization of the sweep (of each base it may "
        "ship: `model`) with its score, size, decode speed and memory on the device (agent or "
        "predicted), what rules it out (budgets missed, a base whose fine-tune the gate refuses), "
        "and the choice.",
    )
