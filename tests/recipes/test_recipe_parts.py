"""The recipe table (recipes/recipe_parts.py) covers every recipe a method and training type run,
with the base learning rates each method starts from."""

from __future__ import annotations

import pytest

from domain.job_config import JobConfig
from domain.lists import METHOD_TYPES, METHODS, RECIPES, TRAINING_TYPES, recipe_for
from recipes.dpo import FULL_DPO_LR, LORA_DPO_LR
from recipes.full_sft import FULL_SFT_LR
from recipes.recipe_parts import RECIPE_PARTS, base_learning_rate


def test_every_method_and_training_type_runs_a_recipe_in_the_table() -> None:
    assert tuple(RECIPE_PARTS) == RECIPES
    assert tuple(METHODS) == METHOD_TYPES
    ran = {recipe_for(m, t) for m in METHOD_TYPES for t in TRAINING_TYPES}
    assert ran == set(RECIPES)


def test_base_learning_rates() -> None:
    catalog = 2e-4
    assert base_learning_rate("supervised", "lora", catalog) == catalog
    assert base_learning_rate("supervised", "full", catalog) == FULL_SFT_LR
    assert base_learning_rate("dpo", "lora", catalog) == LORA_DPO_LR
    assert base_learning_rate("dpo", "full", catalog) == FULL_DPO_LR
    assert FULL_SFT_LR <= catalog / 5 and FULL_DPO_LR < LORA_DPO_LR


@pytest.mark.parametrize(
    ("method", "training_type", "fields"),
    [
        ("supervised", "lora", {"lora"}),
        ("supervised", "full", set()),
        ("dpo", "lora", {"lora", "beta"}),
        ("dpo", "full", {"lora", "beta"}),
    ],
)
def test_each_recipe_takes_its_own_fields_from_the_job(
    method: str, training_type: str, fields: set[str]
) -> None:
    job = JobConfig.model_validate(
        {"model": "LiquidAI/LFM2-350M", "training_file": "file-x", "method": {"type": method},
         "training_type": training_type}
    )  # fmt: skip
    parts = RECIPE_PARTS[recipe_for(job.method.type, job.training_type)]
    own = parts.job_fields(job)
    assert set(own) == fields
    assert (own.get("lora") is not None) == (training_type == "lora")
    if method == "dpo":
        assert own["beta"] == 0.1  # "auto"
    assert set(own) <= set(parts.config.model_fields)
