"""The base learning rate each method starts from; a job's `learning_rate_multiplier` scales it.

LoRA SFT takes the catalog's per-base rate (Liquid's ~2e-4 for LFM2 adapters). Full fine-tuning
moves every weight, so its rate is ~10x lower (2e-5), and DPO lower again: it only needs the two
answers' likelihoods to move apart, and big steps drift from the reference (recipes/dpo.py).
"""

from __future__ import annotations

from domain.lists import MethodType, TrainingType
from recipes.dpo import FULL_DPO_LR, LORA_DPO_LR
from recipes.full_sft import FULL_SFT_LR


def base_learning_rate(method: MethodType, training_type: TrainingType, catalog_lora_lr: float) -> float:
    if method == "dpo":
        return LORA_DPO_LR if training_type == "lora" else FULL_DPO_LR
    return catalog_lora_lr if training_type == "lora" else FULL_SFT_LR
