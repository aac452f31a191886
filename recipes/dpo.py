"""Direct Preference Optimization of a causal LM on preference pairs (TRL DPOTrainer, LoRA by default).

Reads top to bottom like the run it performs:

    preference rows -> hyperparameters -> policy (+ LoRA) -> DPOTrainer -> adapter -> merged model

Rows come in TRL's prompt/chosen/rejected format or OpenAI's DPO format (recipes.preference_data)
and are all validated before any model loads: a bad row is a ValueError naming its line.

DPO raises the policy's log-probability margin log p(chosen) - log p(rejected) relative to a frozen
reference, scaled by `beta`. With LoRA the reference costs nothing: TRL scores it with the adapter
disabled, i.e. the base. Full DPO (`lora: null`) keeps a second full copy of the model as reference.

Learning rates are far below SFT's: the loss only needs the two answers' likelihoods to move apart,
and larger steps make the policy drift from the reference (beta's anchor) and degrade fluency.
Defaults: 5e-7 for full DPO (Liquid's recommendation for LFM2, range 1e-7 .. 1e-6, and TRL's full
DPO example) and 5e-6 with LoRA (TRL's LoRA DPO example: an adapter needs ~10x the full rate, as in
SFT).

    python -m recipes.dpo --config recipes/configs/dpo.yaml max_steps=20 beta=0.2
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from transformers import TrainerCallback

from domain.job_config import Hyperparameters, LoraSettings
from recipes.chat_data import inference_template, training_template
from recipes.full_sft import load_trainable_model
from recipes.preference_data import load_preference_rows
from recipes.speed import SpeedMode, SpeedPlan
from recipes.training_common import (
    EndOfRun,
    ResolvedHyperparameters,
    TrainResult,
    common_training_args,
    load_config,
    load_model,
    lora_config,
    lora_targets,
    make_speed_plan,
    parameter_counts,
    resolve_hyperparameters,
    run_recipe_cli,
    run_training,
    save_outputs,
    stopped_early,
    summarize,
    use_cuda,
)

log = logging.getLogger(__name__)

LORA_DPO_LR = 5e-6  # trl/scripts/dpo.py, LoRA example
FULL_DPO_LR = 5e-7  # Liquid's full-DPO rate for LFM2 (1e-7 .. 1e-6); trl/scripts/dpo.py full example


class DPORecipeConfig(BaseModel):
    """Everything one DPO run needs; loadable from YAML."""

    model_config = ConfigDict(extra="forbid")

    base_model_dir: Path = Field(description="A local Hugging Face checkpoint, usually an SFT'd model.")
    train_file: Path = Field(description="Preference JSONL: TRL prompt/chosen/rejected or OpenAI DPO rows.")
    eval_file: Path | None = None
    output_dir: Path = Field(description="Gets checkpoints/, adapter/ (LoRA only) and merged/.")
    seed: int = 42
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    lora: LoraSettings | None = Field(
        default_factory=LoraSettings, description="LoRA settings; null trains every weight (full DPO)."
    )
    base_learning_rate: float | None = Field(
        default=None, gt=0, description="None: 5e-6 with LoRA, 5e-7 for full DPO; the multiplier scales it."
    )
    beta: float = Field(
        default=0.1, gt=0, description="How strongly the policy is held to the reference (TRL's default)."
    )
    max_length: int = Field(default=512, ge=16, description="Prompt + answer; longer pairs keep the start.")
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
    def from_yaml(cls, path: Path, overrides: Sequence[str] = ()) -> DPORecipeConfig:
        return load_config(cls, path, overrides)

    def learning_rate(self) -> float:
        if self.base_learning_rate is not None:
            return self.base_learning_rate
        return LORA_DPO_LR if self.lora is not None else FULL_DPO_LR


class DPOResult(BaseModel):
    training: TrainResult  # steps, losses, tokens, parameters and outputs, as the SFT recipes report them
    beta: float
    reward_margins: list[tuple[int, float]]  # (step, TRL's logged mean rewards/margins)
    reward_accuracy: float | None  # last logged share of pairs whose chosen answer out-rewards the rejected


# ---- data ---------------------------------------------------------------------------------------


def to_preference_dataset(rows: list[dict[str, Any]]) -> Any:
    """Canonical preference rows as a TRL conversational preference dataset.

    `tools` is a JSON string for the reason recipes.training_common.to_dataset gives; DPOTrainer
    json-decodes it before applying the chat template.
    """
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": r["prompt"],
                "chosen": r["chosen"],
                "rejected": r["rejected"],
                "tools": json.dumps(r["tools"]) if r.get("tools") else None,
            }
            for r in rows
        ]
    )


def count_pair_tokens(dataset: Any, max_length: int) -> int:
    """Tokens the policy reads per epoch: the prompt twice (once per answer) plus both answers,
    each sequence capped at max_length as the collator truncates it."""
    total = 0
    for batch in dataset.iter(batch_size=1024):
        for prompt, chosen, rejected in zip(
            batch["prompt_ids"], batch["chosen_ids"], batch["rejected_ids"], strict=True
        ):
            total += min(max_length, len(prompt) + len(chosen)) + min(max_length, len(prompt) + len(rejected))
    return total


def add_pair_lengths(trainer: Any) -> None:
    """A `length` column (prompt + the longer answer) for Trainer's LengthGroupedSampler, which can
    only infer lengths from an `input_ids` column that DPO's tokenized pairs do not have."""
    dataset = trainer.train_dataset
    lengths = [
        len(p) + max(len(c), len(r))
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
    ]
    trainer.train_dataset = dataset.add_column(trainer.args.length_column_name, lengths)
    # Trainer drops every column outside DPOTrainer's signature before it builds the sampler; keep
    # this one (TRL's preference collator reads only the ids it needs, so it passes through unused).
    trainer._set_signature_columns_if_needed()
    trainer._signature_columns = [*trainer._signature_columns, trainer.args.length_column_name]


# ---- the recipe ---------------------------------------------------------------------------------


def dpo_args(
    cfg: DPORecipeConfig, hp: ResolvedHyperparameters, has_eval: bool, cuda: bool, plan: SpeedPlan
) -> Any:
    from trl import DPOConfig

    return DPOConfig(
        **common_training_args(cfg, hp, has_eval, cuda, plan),
        beta=cfg.beta,
        include_num_input_tokens_seen="non_padding",  # the job's tokens/s in metrics events
    )


def load_policy(cfg: DPORecipeConfig, cuda: bool) -> Any:
    # With LoRA the base is frozen and may stay bf16 on a GPU; full DPO updates every weight, which
    # needs fp32 master weights (see full_sft.load_trainable_model).
    if cfg.lora is not None:
        return load_model(cfg.base_model_dir, cuda)
    return load_trainable_model(cfg.base_model_dir)


def build_trainer(
    cfg: DPORecipeConfig, callbacks: Sequence[TrainerCallback]
) -> tuple[Any, ResolvedHyperparameters, SpeedPlan]:
    from transformers import AutoTokenizer, set_seed
    from trl import DPOTrainer

    set_seed(cfg.seed)  # before the model: LoRA's A matrices are randomly initialised
    # Every row of both files is checked before anything heavy loads.
    rows = load_preference_rows(cfg.train_file)
    eval_rows = load_preference_rows(cfg.eval_file) if cfg.eval_file else None
    hp = resolve_hyperparameters(len(rows), cfg.hyperparameters, cfg.learning_rate())

    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model_dir)
    # DPO scores whole answers, so it needs no {% generation %} markers: train on the inference text.
    tokenizer.chat_template = inference_template(training_template(cfg.base_model_dir))
    cuda = use_cuda()
    model = load_policy(cfg, cuda)
    peft_config = lora_config(cfg.lora, cfg.base_model_dir, model) if cfg.lora is not None else None
    plan = make_speed_plan(cfg, "dpo", hp, cuda, rows, cfg.lora)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # LoRA: the base with the adapter disabled; full: TRL loads a frozen copy
        args=dpo_args(cfg, hp, eval_rows is not None, cuda, plan),
        train_dataset=to_preference_dataset(rows),
        eval_dataset=to_preference_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        # EndOfRun last: it reacts to a stop request set by the callbacks before it.
        callbacks=[*callbacks, EndOfRun()],
    )
    if plan.length_grouped:
        add_pair_lengths(trainer)
    return trainer, hp, plan


def reward_log(trainer: Any) -> tuple[list[tuple[int, float]], float | None]:
    """TRL's logged reward margins per step, and the last logged reward accuracy."""
    history = trainer.state.log_history
    margins = [(int(e["step"]), float(e["rewards/margins"])) for e in history if "rewards/margins" in e]
    accuracies = [float(e["rewards/accuracies"]) for e in history if "rewards/accuracies" in e]
    return margins, accuracies[-1] if accuracies else None


def train(cfg: DPORecipeConfig, callbacks: Sequence[TrainerCallback] = ()) -> DPOResult:
    """Run (or resume) one DPO job; `callbacks` go to the trainer (progress, cancel, records)."""
    started = time.monotonic()
    trainer, hp, plan = build_trainer(cfg, callbacks)
    trainable, total = parameter_counts(trainer.model)
    targets = lora_targets(trainer.model)
    log.info("DPO (beta=%s) on %s: %s trainable of %s params", cfg.beta, targets, trainable, total)

    mean_loss = run_training(trainer, cfg, hp)

    outputs = (None, None) if stopped_early(trainer) else save_outputs(trainer, cfg, use_cuda())
    training = summarize(
        trainer,
        mean_loss=mean_loss,
        tokens_per_epoch=count_pair_tokens(trainer.train_dataset, cfg.max_length),
        started=started,
        params=(trainable, total),
        hp=hp,
        targets=targets,
        outputs=outputs,
        plan=plan,
    )
    margins, accuracy = reward_log(trainer)
    return DPOResult(training=training, beta=cfg.beta, reward_margins=margins, reward_accuracy=accuracy)


def main(argv: Sequence[str] | None = None) -> None:
    run_recipe_cli(argv, __doc__, DPORecipeConfig, train, "lora.r=16")


if __name__ == "__main__":
    main()
