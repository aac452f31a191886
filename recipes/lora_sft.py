"""LoRA supervised fine-tuning of a causal LM on OpenAI-format chat rows (TRL SFTTrainer + PEFT).

Reads top to bottom like the run it performs:

    rows -> hyperparameters -> base model + LoRA targets -> SFTTrainer -> adapter -> merged model

Loss is on assistant tokens only: the training chat template wraps each assistant turn (its
closing <|im_end|> included) in {% generation %} markers, and TRL's `assistant_only_loss` masks
everything else. The merged model is saved with the same template minus those markers, so what
llama.cpp renders at inference is byte-for-byte what the model was trained on.

    python -m recipes.lora_sft --config recipes/configs/lora_sft.yaml max_steps=20 lora.r=16
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from transformers import TrainerCallback

from domain.job_config import Hyperparameters, LoraSettings
from recipes.chat_data import load_rows, training_template
from recipes.speed import SpeedMode, SpeedPlan

# The shared pieces live in recipes.training_common; they stay importable from here, as before.
from recipes.training_common import (
    EndOfRun,
    ResolvedHyperparameters,
    TrainResult,
    apply_override,
    check_targets,
    checkpoint_step,
    common_training_args,
    count_tokens,
    default_targets,
    latest_checkpoint,
    load_config,
    load_model,
    lora_config,
    lora_targets,
    make_speed_plan,
    parameter_counts,
    planned_steps,
    resolve_hyperparameters,
    restore_finished,
    run_recipe_cli,
    run_training,
    save_outputs,
    stopped_early,
    summarize,
    to_dataset,
    use_cuda,
)

__all__ = [
    "EndOfRun",
    "LoraSFTConfig",
    "ResolvedHyperparameters",
    "TrainResult",
    "apply_override",
    "build_trainer",
    "check_targets",
    "checkpoint_step",
    "count_tokens",
    "default_targets",
    "latest_checkpoint",
    "load_model",
    "main",
    "planned_steps",
    "resolve_hyperparameters",
    "restore_finished",
    "run_training",
    "save_outputs",
    "sft_config",
    "to_dataset",
    "train",
    "use_cuda",
]

log = logging.getLogger(__name__)


class LoraSFTConfig(BaseModel):
    """Everything one LoRA SFT run needs; loadable from YAML."""

    model_config = ConfigDict(extra="forbid")

    base_model_dir: Path = Field(description="A local Hugging Face checkpoint (see recipes.base_models).")
    train_file: Path = Field(description="OpenAI chat fine-tuning JSONL.")
    eval_file: Path | None = None
    output_dir: Path = Field(description="Gets checkpoints/, adapter/ and merged/.")
    seed: int = 42
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    base_learning_rate: float = Field(
        default=2e-4, gt=0, description="The base's recommended LoRA LR (catalog); the multiplier scales it."
    )
    max_length: int = Field(default=512, ge=16, description="Longer rows are truncated (keep the start).")
    save_steps: int = Field(default=50, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="Stop early (tests, smoke runs).")
    resume: bool = Field(default=True, description="Continue from the newest checkpoint in output_dir.")
    logging_steps: int = Field(default=5, ge=1)
    speed: SpeedMode = Field(
        default="auto",
        description="auto: the fast path on a GPU, the reference path on a CPU; fast / reference force one "
        "(recipes.speed).",
    )
    processes: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Data-parallel processes, one per GPU of this node (recipes/distributed.py): FSDP "
        "for full fine-tuning, DDP for LoRA. The worker sets it from the job's plan.",
    )

    @classmethod
    def from_yaml(cls, path: Path, overrides: Sequence[str] = ()) -> LoraSFTConfig:
        return load_config(cls, path, overrides)


# ---- the recipe ---------------------------------------------------------------------------------


def sft_config(
    cfg: LoraSFTConfig, hp: ResolvedHyperparameters, has_eval: bool, cuda: bool, plan: SpeedPlan
) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        **common_training_args(cfg, hp, has_eval, cuda, plan),
        assistant_only_loss=True,
        include_num_input_tokens_seen="non_padding",  # the job's tokens/s in metrics events
    )


def build_trainer(
    cfg: LoraSFTConfig, callbacks: Sequence[TrainerCallback]
) -> tuple[Any, ResolvedHyperparameters, SpeedPlan]:
    from transformers import AutoTokenizer, set_seed
    from trl import SFTTrainer

    set_seed(cfg.seed)  # before the model: LoRA's A matrices are randomly initialised
    rows = load_rows(cfg.train_file)
    eval_rows = load_rows(cfg.eval_file) if cfg.eval_file else None
    hp = resolve_hyperparameters(len(rows), cfg.hyperparameters, cfg.base_learning_rate)

    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model_dir)
    tokenizer.chat_template = training_template(cfg.base_model_dir)
    cuda = use_cuda()
    model = load_model(cfg.base_model_dir, cuda)
    peft_config = lora_config(cfg.lora, cfg.base_model_dir, model)  # raises on a target matching nothing
    plan = make_speed_plan(cfg, "sft", hp, cuda, rows, cfg.lora)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(cfg, hp, eval_rows is not None, cuda, plan),
        train_dataset=to_dataset(rows),
        eval_dataset=to_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        # EndOfRun last: it reacts to a stop request set by the callbacks before it.
        callbacks=[*callbacks, EndOfRun()],
    )
    return trainer, hp, plan


def train(cfg: LoraSFTConfig, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Run (or resume) one LoRA SFT job; `callbacks` go to the trainer (progress, cancel, records)."""
    started = time.monotonic()
    trainer, hp, plan = build_trainer(cfg, callbacks)
    trainable, total = parameter_counts(trainer.model)
    targets = lora_targets(trainer.model)
    log.info(
        "LoRA on %s: %s trainable of %s params (%.2f%%)", targets, trainable, total, 100 * trainable / total
    )

    mean_loss = run_training(trainer, cfg, hp)

    outputs = (None, None) if stopped_early(trainer) else save_outputs(trainer, cfg, use_cuda())
    return summarize(
        trainer,
        mean_loss=mean_loss,
        tokens_per_epoch=count_tokens(trainer.train_dataset),
        started=started,
        params=(trainable, total),
        hp=hp,
        targets=targets,
        outputs=outputs,
        plan=plan,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_recipe_cli(argv, __doc__, LoraSFTConfig, train, "lora.r=16")


if __name__ == "__main__":
    main()
