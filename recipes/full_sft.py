"""Full-parameter supervised fine-tuning of a causal LM on OpenAI-format chat rows (TRL SFTTrainer).

Reads top to bottom like the run it performs:

    rows -> hyperparameters -> base model (every weight trainable) -> SFTTrainer -> merged model

The same data path as recipes.lora_sft: tool calls become LFM text, the training chat template
marks assistant turns with {% generation %} so TRL's `assistant_only_loss` trains on assistant
tokens only, and output_dir/merged gets the full model with the marker-free inference template.
Checkpoints and resume behave as in lora_sft (output_dir/checkpoints, newest complete one wins,
a rerun of a finished run only writes the outputs).

Learning rate: full fine-tuning updates every weight directly, where LoRA trains a small low-rank
delta (scaled by alpha/r) on a frozen base, so it needs a step about 10x smaller. The default, 2e-5,
is Liquid's recommendation for full SFT of LFM2 (range 1e-5 .. 5e-5; Liquid's Axolotl guide uses
1e-5). The catalog's recommended_lr values (1e-4 .. 5e-4) are LoRA rates: at those, full fine-tuning
of a small model overwrites much of what it learned in pretraining (catastrophic forgetting), so the
worker must not pass them here.

    python -m recipes.full_sft --config recipes/configs/full_sft.yaml max_steps=20
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from transformers import TrainerCallback

from domain.job_config import Hyperparameters
from recipes.chat_data import load_rows, training_template
from recipes.speed import SpeedMode, SpeedPlan
from recipes.training_common import (
    EndOfRun,
    ResolvedHyperparameters,
    TrainResult,
    common_training_args,
    count_tokens,
    load_config,
    make_speed_plan,
    parameter_counts,
    resolve_hyperparameters,
    run_recipe_cli,
    run_training,
    save_outputs,
    stopped_early,
    summarize,
    to_dataset,
    use_cuda,
)

log = logging.getLogger(__name__)

# Liquid's full-SFT rate for LFM2 (docs.liquid.ai, TRL guide): 2e-5, within 1e-5 .. 5e-5.
FULL_SFT_LR = 2e-5


class FullSFTConfig(BaseModel):
    """Everything one full SFT run needs; loadable from YAML."""

    model_config = ConfigDict(extra="forbid")

    base_model_dir: Path = Field(description="A local Hugging Face checkpoint (see recipes.base_models).")
    train_file: Path = Field(description="OpenAI chat fine-tuning JSONL.")
    eval_file: Path | None = None
    output_dir: Path = Field(description="Gets checkpoints/ and merged/.")
    seed: int = 42
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    base_learning_rate: float = Field(
        default=FULL_SFT_LR,
        gt=0,
        description="Full fine-tuning LR (~10x below LoRA's; 1e-5 .. 5e-5); the multiplier scales it.",
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
    def from_yaml(cls, path: Path, overrides: Sequence[str] = ()) -> FullSFTConfig:
        return load_config(cls, path, overrides)


# ---- the recipe ---------------------------------------------------------------------------------


def load_trainable_model(model_dir: Path) -> Any:
    """fp32 weights on every device.

    On a GPU the forward and backward still run in bf16 (the `bf16` autocast in the trainer args),
    but AdamW updates fp32 master weights: its per-step change is about the LR, 2e-5, which is
    under half a bf16 step for any weight larger than ~0.01, so bf16 weights would round most
    updates away and silently not train. (LoRA can keep the frozen base in bf16.)
    """
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def sft_config(
    cfg: FullSFTConfig, hp: ResolvedHyperparameters, has_eval: bool, cuda: bool, plan: SpeedPlan
) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        **common_training_args(cfg, hp, has_eval, cuda, plan),
        assistant_only_loss=True,
        include_num_input_tokens_seen="non_padding",  # the job's tokens/s in metrics events
    )


def build_trainer(
    cfg: FullSFTConfig, callbacks: Sequence[TrainerCallback]
) -> tuple[Any, ResolvedHyperparameters, SpeedPlan]:
    from transformers import AutoTokenizer, set_seed
    from trl import SFTTrainer

    set_seed(cfg.seed)
    rows = load_rows(cfg.train_file)
    eval_rows = load_rows(cfg.eval_file) if cfg.eval_file else None
    hp = resolve_hyperparameters(len(rows), cfg.hyperparameters, cfg.base_learning_rate)

    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model_dir)
    tokenizer.chat_template = training_template(cfg.base_model_dir)
    cuda = use_cuda()
    plan = make_speed_plan(cfg, "sft", hp, cuda, rows, None)
    trainer = SFTTrainer(
        model=load_trainable_model(cfg.base_model_dir),
        args=sft_config(cfg, hp, eval_rows is not None, cuda, plan),
        train_dataset=to_dataset(rows),
        eval_dataset=to_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        # EndOfRun last: it reacts to a stop request set by the callbacks before it.
        callbacks=[*callbacks, EndOfRun()],
    )
    return trainer, hp, plan


def train(cfg: FullSFTConfig, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Run (or resume) one full SFT job; `callbacks` go to the trainer (progress, cancel, records).

    The result has adapter_dir=None and target_modules="all"; merged_dir holds the trained model.
    """
    started = time.monotonic()
    trainer, hp, plan = build_trainer(cfg, callbacks)
    trainable, total = parameter_counts(trainer.model)
    log.info("full fine-tuning: %s trainable of %s params", trainable, total)

    mean_loss = run_training(trainer, cfg, hp)

    outputs = (None, None) if stopped_early(trainer) else save_outputs(trainer, cfg, use_cuda())
    return summarize(
        trainer,
        mean_loss=mean_loss,
        tokens_per_epoch=count_tokens(trainer.train_dataset),
        started=started,
        params=(trainable, total),
        hp=hp,
        targets="all",
        outputs=outputs,
        plan=plan,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_recipe_cli(argv, __doc__, FullSFTConfig, train, "max_steps=20")


if __name__ == "__main__":
    main()
