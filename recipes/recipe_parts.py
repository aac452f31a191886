"""Each recipe's parts, in one table: its train function, config and result classes, the base
learning rate it starts from, and what its config takes from a job besides the fields every
recipe shares. The worker's train stage and training process, the plan and the benchmarks read
them here; the recipe a job runs is domain/lists.py recipe_for.

The base learning rates: LoRA SFT takes the catalog's per-base rate (Liquid's ~2e-4 for LFM2
adapters). Full fine-tuning moves every weight, so its rate is ~10x lower (2e-5), and DPO lower
again: it only needs the two answers' likelihoods to move apart, and big steps drift from the
reference (recipes/dpo.py). A job's `learning_rate_multiplier` scales the base.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from domain.job_config import JobConfig
from domain.lists import MethodType, RecipeName, TrainingType, recipe_for
from recipes import dpo, full_sft, lora_sft
from recipes.dpo import FULL_DPO_LR, LORA_DPO_LR, DPOResult
from recipes.full_sft import FULL_SFT_LR
from recipes.training_common import TrainResult


@dataclass(frozen=True)
class RecipeParts:
    train: Callable[..., Any]
    config: type[BaseModel]
    result: type[BaseModel]
    # (training type, the catalog's LoRA rate for the base) -> the base learning rate
    learning_rate: Callable[[TrainingType, float], float]
    # A job -> what this recipe's config takes besides the common fields (worker/stages/train.py)
    job_fields: Callable[[JobConfig], dict[str, Any]]


def _lora(job: JobConfig) -> dict[str, Any]:
    return {"lora": job.lora if job.training_type == "lora" else None}


RECIPE_PARTS: dict[RecipeName, RecipeParts] = {
    "lora_sft": RecipeParts(
        lora_sft.train, lora_sft.LoraSFTConfig, TrainResult, lambda _t, catalog: catalog, _lora
    ),
    "full_sft": RecipeParts(
        full_sft.train, full_sft.FullSFTConfig, TrainResult, lambda _t, _c: FULL_SFT_LR, lambda _j: {}
    ),
    "dpo": RecipeParts(
        dpo.train,
        dpo.DPORecipeConfig,
        DPOResult,
        lambda t, _c: LORA_DPO_LR if t == "lora" else FULL_DPO_LR,
        lambda job: _lora(job) | {"beta": job.method.beta},
    ),
}


def base_learning_rate(method: MethodType, training_type: TrainingType, catalog_lora_lr: float) -> float:
    """The rate a job's recipe starts from, before its `learning_rate_multiplier`."""
    return RECIPE_PARTS[recipe_for(method, training_type)].learning_rate(training_type, catalog_lora_lr)
