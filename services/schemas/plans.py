"""The pre-run plan of a fine-tune job: what it will train on, whether it fits, how long, what it costs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from domain.lists import MethodType, TrainingType


class TokenCounts(BaseModel):
    train_rows: int
    eval_rows: int
    train_tokens_per_epoch: int
    mean_row_tokens: float
    longest_row_tokens: int
    truncated_rows: int
    max_length: int
    exact: bool  # False when the rows do not exist yet (a task to synthesize): then an estimate
    replay_rows: int = 0  # the base's own answers to general prompts trained on beside train_rows


class ResolvedHyperparametersPublic(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate: float
    steps: int


class GpuFitPublic(BaseModel):
    gpu: str
    gpus: int = 1  # of this class, one node: >1 when only sharded over several does it fit (FSDP)
    memory_gib: float
    peak_memory_gib: float  # per GPU: the memory model's peak for the chosen micro-batch, longest row
    fits: bool
    no_fit_reason: str | None
    # what the worker's fast path would choose on this GPU (recipes.speed); None when it does not fit
    micro_batch_size: int | None = None
    grad_accum: int | None = None
    activation_checkpointing: bool | None = None
    estimated_train_seconds: float


class CostItemPublic(BaseModel):
    stage: str
    description: str
    unit: str
    quantity: float
    unit_price_usd: float
    amount_usd: float


class QuotePublic(BaseModel):
    currency: Literal["usd"] = "usd"
    compute: str  # the price-book compute class the job would run on
    items: list[CostItemPublic]
    total_usd: float


class BudgetCheckPublic(BaseModel):
    job_budget_usd: float | None
    org_budget_usd: float | None
    org_remaining_usd: float | None  # budget - spent - what running jobs are still quoted to spend
    allowed_to_proceed: bool
    code: Literal["job_budget_exceeded", "org_budget_exceeded"] | None = None
    reason: str | None


class SynthesisPlanPublic(BaseModel):
    """What a job from a task description asks the teacher for, and the least it trains on."""

    asked: int  # task.num_examples
    train_rows: int
    eval_rows: int  # raised to the gate's min_eval_rows (infra/job_config.eval_quota)
    floor: dict[str, Any]  # synth/floor.py: below it the job ends insufficient_data before training
    max_requests: int  # the most candidate requests the teacher gets (rounds stop there)


# Properties to return via API (nothing is stored: a plan is computed on request)
class OtherBasePublic(BaseModel):
    """A base a sweep target may ship besides the job's model (targets[].models), fine-tuned too."""

    model: str
    total_params: int
    trainable_params: int
    training_flops: float


class PlanPublic(BaseModel):
    object: Literal["fine_tuning.job.plan"] = "fine_tuning.job.plan"
    model: str
    method: TrainingType  # the training type
    method_type: MethodType = "supervised"
    tokens: TokenCounts
    hyperparameters: ResolvedHyperparametersPublic
    total_params: int
    trainable_params: int
    training_flops: float
    # the sweep's other bases, each trained like `model` (their seconds and cost are in the quote;
    # `memory` is the largest base's)
    other_models: list[OtherBasePublic] = []
    memory: list[GpuFitPublic]
    compute: str  # the class it trains on: the workers' one, or the pool it is routed to
    gpus: int = 1  # how many of that class (one node) it holds: memory[].gpus of the class
    queue: str  # that class's queue (infra/queue.py queue_for)
    fits: bool  # on that compute class
    no_fit_reason: str | None
    estimated_seconds: dict[str, float]  # per stage, and "total"
    quote: QuotePublic
    budget: BudgetCheckPublic
    synthesis: SynthesisPlanPublic | None = None  # a job from a task description
