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

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from transformers import TrainerCallback

from infra.job_config import Hyperparameters, LoraSettings
from recipes.base_models import LFM2_LORA_TARGETS
from recipes.chat_data import inference_template, load_rows, model_type, training_template

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

    @classmethod
    def from_yaml(cls, path: Path, overrides: Sequence[str] = ()) -> LoraSFTConfig:
        data: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {}
        for item in overrides:
            apply_override(data, item)
        return cls.model_validate(data)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply `a.b=value` to nested dict `data`; the value is parsed as YAML (2, 1e-3, true, [x])."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r} is not key=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(raw)


class ResolvedHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate: float


class TrainResult(BaseModel):
    steps: int
    epochs: float  # epochs completed, fractional when max_steps or a stop request ended the run
    train_loss: float | None  # last logged training loss
    mean_train_loss: float | None  # mean over the steps run by this call (TRL's training_loss)
    eval_loss: float | None
    loss_history: list[tuple[int, float]]  # (step, logged training loss)
    trained_tokens: int
    seconds: float
    trainable_params: int
    total_params: int
    hyperparameters: ResolvedHyperparameters
    target_modules: list[str] | str
    stopped_early: bool  # a callback stopped training before the planned last step
    adapter_dir: Path | None  # None when stopped early
    merged_dir: Path | None


# ---- hyperparameters ----------------------------------------------------------------------------

# "auto" follows OpenAI's published fine-tuning defaults. Epochs: 3 by default, but the number of
# examples seen (rows x epochs) is kept between 100 and 25,000, so 20 rows get 5 epochs and 50,000
# rows get 1. Batch size: about 0.2% of the rows (OpenAI's rule), kept in 4..64: fewer than 4 makes
# LoRA steps noisy, more than 64 buys little on one device and only costs memory.
TARGET_EPOCHS, MIN_EXAMPLES_SEEN, MAX_EXAMPLES_SEEN, MAX_AUTO_EPOCHS = 3, 100, 25_000, 25


def resolve_hyperparameters(
    n_rows: int, hp: Hyperparameters, recommended_lr: float
) -> ResolvedHyperparameters:
    if n_rows < 1:
        raise ValueError("no training rows")
    if hp.n_epochs != "auto":
        n_epochs = int(hp.n_epochs)
    elif n_rows * TARGET_EPOCHS < MIN_EXAMPLES_SEEN:
        n_epochs = min(MAX_AUTO_EPOCHS, math.ceil(MIN_EXAMPLES_SEEN / n_rows))
    elif n_rows * TARGET_EPOCHS > MAX_EXAMPLES_SEEN:
        n_epochs = max(1, MAX_EXAMPLES_SEEN // n_rows)
    else:
        n_epochs = TARGET_EPOCHS
    if hp.batch_size != "auto":
        batch_size = int(hp.batch_size)
    else:
        batch_size = min(n_rows, max(4, min(64, math.ceil(n_rows * 0.002))))
    # The catalog's recommended LR is already tuned per model size; "auto" uses it as is.
    multiplier = 1.0 if hp.learning_rate_multiplier == "auto" else float(hp.learning_rate_multiplier)
    return ResolvedHyperparameters(
        n_epochs=n_epochs, batch_size=batch_size, learning_rate=recommended_lr * multiplier
    )


# ---- model and LoRA targets ---------------------------------------------------------------------


def use_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_model(model_dir: Path, cuda: bool) -> Any:
    """bf16 on GPU; fp32 on CPU, where bf16 matmuls are slow and lose precision."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if cuda else torch.float32
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)


def default_targets(model_dir: Path) -> list[str] | str:
    # LFM2's names differ from Llama's; for other architectures let PEFT find every Linear.
    return list(LFM2_LORA_TARGETS) if model_type(model_dir).startswith("lfm2") else "all-linear"


def check_targets(model: Any, targets: list[str] | str) -> None:
    """Raise ValueError naming any target that matches no Linear layer.

    PEFT matches a name against the full module path or its dotted suffix, and silently ignores a
    list where *some* names match nothing (o_proj on LFM2), training less than the user asked for.
    """
    import torch

    if isinstance(targets, str):
        return
    modules = dict(model.named_modules())
    for target in targets:
        hits = [n for n in modules if n == target or n.endswith("." + target)]
        if any(isinstance(modules[n], torch.nn.Linear) for n in hits):
            continue
        linear_leaves = sorted(
            {n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, torch.nn.Linear)}
        )
        found = (
            f" (it names {type(modules[hits[0]]).__name__} modules, which LoRA cannot adapt)" if hits else ""
        )
        raise ValueError(
            f"LoRA target module {target!r} matches no Linear layer in {type(model).__name__}{found}; "
            f"Linear layers here: {', '.join(linear_leaves)}"
        )


# ---- data ---------------------------------------------------------------------------------------


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A `messages` (+ `tools`) dataset in TRL's conversational format.

    `tools` goes in as a JSON string: tool schemas differ from row to row, and Arrow would merge
    them into one struct type padded with nulls, changing the rendered tool list. TRL's tokenizer
    step json-decodes a string `tools` column before applying the chat template.
    """
    from datasets import Dataset

    return Dataset.from_list(
        [
            {"messages": r["messages"], "tools": json.dumps(r["tools"]) if r.get("tools") else None}
            for r in rows
        ]
    )


def count_tokens(dataset: Any) -> int:
    """Tokens in a prepared (templated, truncated, unpadded) dataset, read in bounded batches.

    trained_tokens = this x epochs completed, like OpenAI's billing: prompt tokens count too,
    padding never does.
    """
    return sum(len(ids) for batch in dataset.iter(batch_size=1024) for ids in batch["input_ids"])


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint; trainer_state.json is written last, so it marks completeness."""
    done = [p for p in checkpoints_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    done = [p for p in done if p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])


def planned_steps(trainer: Any, cfg: LoraSFTConfig, hp: ResolvedHyperparameters) -> int:
    """The step this run ends at: max_steps, else epochs x batches per epoch (no grad accumulation)."""
    return cfg.max_steps or hp.n_epochs * math.ceil(len(trainer.train_dataset) / hp.batch_size)


def restore_finished(trainer: Any, checkpoint: Path) -> None:
    """Load a checkpoint that already reached the planned last step, without training.

    A rerun of a finished job (the worker died while merging, say) only has to write the outputs.
    Trainer.train would instead run one step past the end whenever the end falls mid-epoch.
    """
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import TrainerState

    log.info("%s already reached the last step; saving its weights without training", checkpoint)
    set_peft_model_state_dict(trainer.model, load_peft_weights(str(checkpoint)))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


class EndOfRun(TrainerCallback):
    """Make the last step count: log its loss, and checkpoint it when training was stopped early.

    Trainer checks `should_log`/`should_save` right after `on_step_end` and `on_log`. Logging the
    last step makes TrainResult.train_loss the loss at the end; saving on a stop request (cancel,
    worker shutdown) lets a rerun resume there instead of at the last save_steps boundary.
    """

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if control.should_training_stop or state.global_step >= state.max_steps:
            control.should_log = True
        if control.should_training_stop and state.global_step < state.max_steps:
            control.should_save = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self.on_step_end(args, state, control)


# ---- the recipe ---------------------------------------------------------------------------------


def sft_config(cfg: LoraSFTConfig, hp: ResolvedHyperparameters, has_eval: bool, cuda: bool) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(cfg.output_dir / "checkpoints"),
        seed=cfg.seed,
        num_train_epochs=hp.n_epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0.03,  # < 1 means a fraction of the total steps
        max_length=cfg.max_length,
        assistant_only_loss=True,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.save_steps,
        # TRL defaults bf16 and checkpointing to on; both only pay off on a GPU.
        use_cpu=not cuda,
        bf16=cuda,
        activation_checkpointing=cuda,
        dataloader_pin_memory=cuda,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",  # the job's tokens/s in metrics events
    )


def build_trainer(
    cfg: LoraSFTConfig, callbacks: Sequence[TrainerCallback]
) -> tuple[Any, ResolvedHyperparameters]:
    from peft import LoraConfig
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
    targets = cfg.lora.target_modules or default_targets(cfg.base_model_dir)
    check_targets(model, targets)
    peft_config = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=sft_config(cfg, hp, eval_rows is not None, cuda),
        train_dataset=to_dataset(rows),
        eval_dataset=to_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        # EndOfRun last: it reacts to a stop request set by the callbacks before it.
        callbacks=[*callbacks, EndOfRun()],
    )
    return trainer, hp


def save_outputs(trainer: Any, cfg: LoraSFTConfig, cuda: bool) -> tuple[Path, Path]:
    """Write the PEFT adapter, then the merged model in the dtype the GGUF converter reads."""
    import torch

    tokenizer = trainer.processing_class
    tokenizer.chat_template = inference_template(training_template(cfg.base_model_dir))
    adapter_dir, merged_dir = cfg.output_dir / "adapter", cfg.output_dir / "merged"
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)

    merged = trainer.model.merge_and_unload()  # folds B@A*scale into the base weights, in place
    merged = merged.to(dtype=torch.bfloat16 if cuda else torch.float32)
    merged.config.use_cache = True
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    return adapter_dir, merged_dir


def run_training(trainer: Any, cfg: LoraSFTConfig, hp: ResolvedHyperparameters) -> float | None:
    """Train, continuing from the newest checkpoint when cfg.resume; returns this call's mean loss."""
    resume_from = latest_checkpoint(cfg.output_dir / "checkpoints") if cfg.resume else None
    if resume_from is not None and checkpoint_step(resume_from) >= planned_steps(trainer, cfg, hp):
        restore_finished(trainer, resume_from)
        return None
    log.info("training%s", f", resuming from {resume_from}" if resume_from else "")
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return float(output.training_loss)


def train(cfg: LoraSFTConfig, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Run (or resume) one LoRA SFT job; `callbacks` go to the trainer (progress, cancel, records)."""
    started = time.monotonic()
    trainer, hp = build_trainer(cfg, callbacks)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    targets = trainer.model.peft_config["default"].target_modules
    targets = sorted(targets) if isinstance(targets, set | list) else targets
    log.info(
        "LoRA on %s: %s trainable of %s params (%.2f%%)", targets, trainable, total, 100 * trainable / total
    )

    mean_loss = run_training(trainer, cfg, hp)

    state = trainer.state
    stopped_early = state.global_step < state.max_steps
    adapter_dir, merged_dir = (None, None) if stopped_early else save_outputs(trainer, cfg, use_cuda())
    losses = [(int(e["step"]), float(e["loss"])) for e in state.log_history if "loss" in e]
    eval_losses = [float(e["eval_loss"]) for e in state.log_history if "eval_loss" in e]
    tokens_per_epoch = count_tokens(trainer.train_dataset)
    return TrainResult(
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        train_loss=losses[-1][1] if losses else None,
        mean_train_loss=mean_loss,
        eval_loss=eval_losses[-1] if eval_losses else None,
        loss_history=losses,
        trained_tokens=round(tokens_per_epoch * float(state.epoch or 0.0)),
        seconds=round(time.monotonic() - started, 3),
        trainable_params=trainable,
        total_params=total,
        hyperparameters=hp,
        target_modules=targets,
        stopped_early=stopped_early,
        adapter_dir=adapter_dir,
        merged_dir=merged_dir,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML file with LoraSFTConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value, dotted for nested fields: lora.r=16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = LoraSFTConfig.from_yaml(args.config, args.overrides)
    if not (cfg.base_model_dir / "config.json").is_file():
        parser.error(
            f"{cfg.base_model_dir} is not a checkpoint directory; "
            "`python -m recipes.base_models resolve <model id>` prints (and prepares) one"
        )
    result = train(cfg)  # with disable_tqdm, Trainer's PrinterCallback prints each log line
    print(result.model_dump_json(indent=2))


if __name__ == "__main__":
    main()
