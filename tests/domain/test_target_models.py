"""A sweep target's other bases (TargetSpec.models): where they may be named, and the order the
job trains and sweeps them in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.job_config import MAX_SWEEP_MODELS, JobConfig

SWEEP = {"profile": "raspberry-pi-5", "select": "best_within_budget"}


def _config(*targets: object) -> JobConfig:
    return JobConfig.model_validate({"model": "LiquidAI/LFM2-700M", "training_file": "f", "targets": targets})


def test_each_target_sweeps_the_jobs_model_first_and_the_job_trains_each_other_base_once() -> None:
    cfg = _config(
        SWEEP | {"models": ["LiquidAI/LFM2-350M", "LiquidAI/LFM2-700M"]},
        {"profile": "phone-android", "select": "best_within_budget",
         "models": ["LiquidAI/LFM2.5-350M", "LiquidAI/LFM2-350M"]},
        "laptop-cpu",
    )  # fmt: skip
    assert cfg.target_models("raspberry-pi-5") == ["LiquidAI/LFM2-700M", "LiquidAI/LFM2-350M"]
    assert cfg.target_models("phone-android") == [
        "LiquidAI/LFM2-700M", "LiquidAI/LFM2.5-350M", "LiquidAI/LFM2-350M",
    ]  # fmt: skip
    assert cfg.target_models("laptop-cpu") == ["LiquidAI/LFM2-700M"]
    assert cfg.other_models == ["LiquidAI/LFM2-350M", "LiquidAI/LFM2.5-350M"]
    # read back as sent, through YAML too: the manifest's job_config says what was allowed
    assert JobConfig.from_yaml(cfg.to_yaml()) == cfg
    assert _config(SWEEP).model_dump(mode="json")["targets"] == [SWEEP]


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (
            {"profile": "raspberry-pi-5", "models": ["LiquidAI/LFM2-350M"]},
            "only with select 'best_within_budget'",
        ),
        (SWEEP | {"models": ["LiquidAI/LFM2-350M", "LiquidAI/LFM2-350M"]}, "named twice"),
        (SWEEP | {"models": [f"org/m{i}" for i in range(MAX_SWEEP_MODELS + 1)]}, "at most"),
        (SWEEP | {"models": [""]}, "at least 1 character"),
    ],
)
def test_other_bases_are_refused_outside_a_sweep_twice_or_too_many(target: dict, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        _config(target)
    assert words in str(err.value) and "models" in str(err.value)


def test_the_cap_on_other_bases_counts_every_target_of_the_job() -> None:
    three = [f"org/m{i}" for i in range(3)]
    with pytest.raises(ValidationError) as err:
        _config(SWEEP | {"models": three}, {"profile": "phone-android", "select": "best_within_budget",
                                           "models": ["org/m9", "org/m8"]})  # fmt: skip
    assert f"at most {MAX_SWEEP_MODELS} other bases in one job" in str(err.value)
    ok = _config(SWEEP | {"models": three}, {"profile": "phone-android", "select": "best_within_budget",
                                            "models": three})  # fmt: skip
    assert ok.other_models == three
