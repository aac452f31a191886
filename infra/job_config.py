"""The one job config object.

A `JobConfig` is built from the create request, stored with the job row, handed to the worker, and
written into every artifact manifest, so a published model says exactly how it was made. Fields
named like OpenAI's (`model`, `training_file`, `method`, `suffix`, `seed`, `metadata`) mean what
they mean there; `task`, `targets` and `lora` are edgetune's own.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

Auto = Literal["auto"]
MAX_EVAL_ROWS = 64


def held_out_count(n_rows: int) -> int:
    """Rows held out for eval when a job has no validation file: ~10%, at least 2, at most 64
    (the eval runs every model and artifact on each, so its cost grows with targets)."""
    return min(max(2, n_rows // 10), MAX_EVAL_ROWS)


class TaskSpec(BaseModel):
    """A plain-language task, used to synthesize data when no training file is given."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=8, max_length=4000, description="What the model must do.")
    labels: list[str] | None = Field(
        default=None,
        description="Classification labels; when given, the model is trained to answer with exactly one.",
    )
    num_examples: int = Field(default=48, ge=8, le=5000, description="Rows to generate (train + eval).")
    eval_fraction: float = Field(default=0.25, gt=0.0, lt=0.9, description="Share held out for eval.")

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        cleaned = [s.strip() for s in v]
        if len(cleaned) < 2:
            raise ValueError("a classification task needs at least 2 labels")
        if any(not s for s in cleaned):
            raise ValueError("labels must be non-empty strings")
        if len({s.lower() for s in cleaned}) != len(cleaned):
            raise ValueError("labels must be distinct (case-insensitive)")
        return cleaned

    @property
    def task_type(self) -> Literal["classification", "generation"]:
        return "classification" if self.labels else "generation"


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: int | Auto = Field(default="auto", description="Epochs over the training set.")
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = Field(
        default="auto", description="Multiplies the base model's recommended LoRA learning rate."
    )

    @field_validator("n_epochs", "batch_size")
    @classmethod
    def _positive_int(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 50:
            raise ValueError("must be 'auto' or an integer in 1..50")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _positive_float(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0 < float(v) <= 100:
            raise ValueError("must be 'auto' or a number in (0, 100]")
        return v


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised"] = "supervised"
    supervised: Supervised = Field(default_factory=Supervised)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1, le=512)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        default=None, description="None picks the base architecture's default (LFM2: all its linears)."
    )


class JobConfig(BaseModel):
    """Everything that determines what a fine-tune job produces."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Base model id, e.g. LiquidAI/LFM2-350M.")
    training_file: str | None = None
    validation_file: str | None = None
    method: Method = Field(default_factory=Method)
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    task: TaskSpec | None = None
    targets: list[str] = Field(default_factory=lambda: ["laptop-cpu"], min_length=1, max_length=8)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Cap on this job's cost: refused at create when the quote exceeds it, stopped "
        "with budget_exhausted if a running job reaches it.",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        # OpenAI's limits: at most 16 pairs, keys <= 64 chars, values <= 512 chars.
        if v is None:
            return v
        if len(v) > 16:
            raise ValueError("at most 16 metadata pairs")
        for key, value in v.items():
            if len(key) > 64 or len(value) > 512:
                raise ValueError(f"metadata key {key!r}: keys <= 64 chars, values <= 512 chars")
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> JobConfig:
        data: Any = yaml.safe_load(text)
        return cls.model_validate(data)
