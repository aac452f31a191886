"""The pieces every training recipe shares: config loading, hyperparameters, LoRA targets, data,
checkpoints and resume, the end-of-run callback, outputs and the run summary.

Each recipe (`lora_sft`, `full_sft`, `dpo`) still reads top to bottom on its own; this module only
holds what would otherwise be copied between them. Nothing here picks a recipe or registers one.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from pydantic import BaseModel
from transformers import TrainerCallback

from domain.job_config import Hyperparameters, LoraSettings
from recipes.base_models import LFM2_LORA_TARGETS
from recipes.best_checkpoint import BestCheckpoint, Selection
from recipes.chat_data import inference_template, model_type, training_template
from recipes.distributed import full_state_dict, is_main_process, launch, launched, unwrapped_copy, world_size
from recipes.speed import Recipe, SpeedMode, SpeedPlan, plan_speed, speed_args

log = logging.getLogger(__name__)
ConfigT = TypeVar("ConfigT", bound=BaseModel)


# ---- config -------------------------------------------------------------------------------------


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


def load_config(cls: type[ConfigT], path: Path, overrides: Sequence[str] = ()) -> ConfigT:
    """A recipe config from YAML, then `key=value` overrides on top."""
    data: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides:
        apply_override(data, item)
    return cls.model_validate(data)


class RunSettings(Protocol):
    """The fields every recipe config has under the same names (see LoraSFTConfig for their meaning)."""

    base_model_dir: Path
    output_dir: Path
    seed: int
    max_length: int
    save_steps: int
    max_steps: int | None
    resume: bool
    logging_steps: int
    speed: SpeedMode
    processes: int


# ---- hyperparameters ----------------------------------------------------------------------------


class ResolvedHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate: float


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
    """bf16 on GPU; fp32 on CPU, where bf16 matmuls are slow and lose precision.

    For LoRA, where the frozen base only has to be read. Full fine-tuning keeps fp32 master weights
    (see full_sft.load_trainable_model).
    """
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


def lora_config(settings: LoraSettings, model_dir: Path, model: Any) -> Any:
    """PEFT's LoraConfig for `settings`: the architecture's default targets unless some are named,
    checked against `model` first so a name that matches nothing fails before any training."""
    from peft import LoraConfig

    targets = settings.target_modules or default_targets(model_dir)
    check_targets(model, targets)
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def count_lora_params(model_dir: Path, lora: Any) -> tuple[int, int]:
    """Exact (trainable, total) parameters of the LoRA model a job would train, built on the meta
    device so no weights are read; `lora=None` (full fine-tuning) trains them all. Raises
    ValueError when a target module matches no Linear."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    if lora is None:
        total = sum(p.numel() for p in model.parameters())
        return total, total
    targets = lora.target_modules or default_targets(model_dir)
    check_targets(model, targets)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    return int(trainable), int(total)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; PEFT's own count for an adapter-wrapped model."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    return model.num_parameters(only_trainable=True), model.num_parameters()


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


# ---- checkpoints and resume ---------------------------------------------------------------------


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint; trainer_state.json is written last, so it marks completeness."""
    done = [p for p in checkpoints_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    done = [p for p in done if p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])


def planned_steps(trainer: Any, max_steps: int | None, hp: ResolvedHyperparameters) -> int:
    """The step this run ends at: max_steps, else epochs x optimizer steps per epoch, counted as
    Trainer counts them: ceil(micro-batches / accumulation), micro-batches = ceil(rows / micro)."""
    if max_steps:
        return max_steps
    micro, accum = trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps
    # each of world_size processes takes its share of every micro-batch's rows (recipes/distributed.py)
    micro_batches = math.ceil(len(trainer.train_dataset) / (micro * trainer.args.world_size))
    return hp.n_epochs * math.ceil(micro_batches / accum)


def load_full_weights(model: Any, checkpoint: Path) -> None:
    """Load a Trainer checkpoint's full weights (one or several safetensors files) into `model`."""
    from safetensors.torch import load_file

    index = checkpoint / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
    state: dict[str, Any] = {}
    for name in files or ["model.safetensors"]:
        state.update(load_file(checkpoint / name))
    result = model.load_state_dict(state, strict=False)
    # Tied weights (lm_head = embed_tokens) are saved once, so they are "missing" by design.
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint} does not fit the model: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )


def restore_finished(trainer: Any, checkpoint: Path) -> None:
    """Load a checkpoint that already reached the planned last step, without training.

    A rerun of a finished job (the worker died while merging, say) only has to write the outputs.
    Trainer.train would instead run one step past the end whenever the end falls mid-epoch.
    """
    from transformers import TrainerState

    log.info("%s already reached the last step; saving its weights without training", checkpoint)
    if hasattr(trainer.model, "peft_config"):
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(trainer.model, load_peft_weights(str(checkpoint)))
    else:
        load_full_weights(trainer.model, checkpoint)
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def run_training(trainer: Any, cfg: RunSettings, hp: ResolvedHyperparameters) -> float | None:
    """Train, continuing from the newest checkpoint when cfg.resume; returns this call's mean loss."""
    resume_from = latest_checkpoint(cfg.output_dir / "checkpoints") if cfg.resume else None
    if resume_from is not None and checkpoint_step(resume_from) >= planned_steps(trainer, cfg.max_steps, hp):
        restore_finished(trainer, resume_from)
        for cb in trainer.callback_handler.callbacks:  # no training, so no on_train_end: ship the best
            if isinstance(cb, BestCheckpoint):
                cb.finish_restored(trainer.model, trainer.state.global_step)
        return None
    log.info("training%s", f", resuming from {resume_from}" if resume_from else "")
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return float(output.training_loss)


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


# ---- trainer arguments --------------------------------------------------------------------------


def make_speed_plan(
    cfg: RunSettings,
    recipe: Recipe,
    hp: ResolvedHyperparameters,
    cuda: bool,
    rows: list[dict[str, Any]],
    lora: LoraSettings | None,
) -> SpeedPlan:
    """The run's SpeedPlan (recipes.speed): its rows' mean length when padding-free may be chosen,
    and LoRA's trainable parameters for the memory model (estimated: at 16 bytes each they are a
    rounding error next to the frozen base and the activations)."""
    from recipes.estimate import ModelShape, lora_params
    from recipes.token_count import count_tokens as count_row_tokens

    fast = cfg.speed == "fast" or (cfg.speed == "auto" and cuda)
    sft_fast = fast and recipe == "sft"
    mean = count_row_tokens(cfg.base_model_dir, rows, cfg.max_length).mean if sft_fast else None
    trainable = 0
    if fast and cuda and lora is not None:
        n_targets = len(lora.target_modules or LFM2_LORA_TARGETS)
        trainable = lora_params(ModelShape.from_dir(cfg.base_model_dir), lora.r, n_targets)
    plan = plan_speed(
        cfg.speed,
        cuda=cuda,
        model_dir=cfg.base_model_dir,
        recipe=recipe,
        method="lora" if lora is not None else "full",
        batch_size=hp.batch_size,
        max_length=cfg.max_length,
        trainable=trainable,
        mean_row_tokens=mean,
        processes=cfg.processes,
    )
    log.info("speed plan: %s", plan.model_dump_json())
    return plan


def common_training_args(
    cfg: RunSettings, hp: ResolvedHyperparameters, has_eval: bool, cuda: bool, plan: SpeedPlan
) -> dict[str, Any]:
    """TrainingArguments every recipe shares; the recipe adds its trainer's own (SFTConfig, DPOConfig).
    How a step is computed (micro-batches, checkpointing, packing, optimizer) comes from `plan`."""
    return {
        "output_dir": str(cfg.output_dir / "checkpoints"),
        "seed": cfg.seed,
        "num_train_epochs": hp.n_epochs,
        "max_steps": cfg.max_steps or -1,
        "learning_rate": hp.learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0.03,  # < 1 means a fraction of the total steps
        "max_length": cfg.max_length,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": 2,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": cfg.save_steps,
        # bf16 here is mixed precision (autocast): the weights keep the dtype they were loaded in.
        "use_cpu": not cuda,
        "bf16": cuda,
        "dataloader_pin_memory": cuda,
        "report_to": "none",
        "disable_tqdm": True,
        **speed_args(plan),
    }


# ---- outputs and summary ------------------------------------------------------------------------


def save_outputs(trainer: Any, cfg: RunSettings, cuda: bool) -> tuple[Path | None, Path | None]:
    """Write the adapter (LoRA runs only), then the merged model in the dtype the GGUF converter reads.

    Both carry the inference template: the training one minus its {% generation %} markers.
    On several processes rank 0 writes them (None, None on the others, whose result nobody reads).
    """
    import torch

    model = trainer.model
    if world_size() > 1:  # rank 0 saves; under FSDP every rank first sends it its shards
        if not hasattr(model, "peft_config"):
            state = full_state_dict(trainer)
            model = None if state is None else unwrapped_copy(cfg.base_model_dir, state)
        if not is_main_process():
            return None, None
    tokenizer = trainer.processing_class
    tokenizer.chat_template = inference_template(training_template(cfg.base_model_dir))
    adapter_dir: Path | None = None
    merged_dir = cfg.output_dir / "merged"
    if hasattr(model, "peft_config"):
        adapter_dir = cfg.output_dir / "adapter"
        model.save_pretrained(adapter_dir)
        tokenizer.save_pretrained(adapter_dir)
        model = model.merge_and_unload()  # folds B@A*scale into the base weights, in place
    model = model.to(dtype=torch.bfloat16 if cuda else torch.float32)
    model.config.use_cache = True
    model.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    return adapter_dir, merged_dir


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
    target_modules: list[str] | str  # LoRA's targets; "all" for full fine-tuning
    stopped_early: bool  # a stop request (cancel, shutdown) ended training before the planned last step
    adapter_dir: Path | None  # None when stopped early, and always for full fine-tuning
    merged_dir: Path | None
    speed_plan: SpeedPlan | None = None  # how the steps were computed (recipes.speed)
    checkpoint_selection: Selection | None = None  # held-out scores and the step kept (best_checkpoint)


def lora_targets(model: Any) -> list[str] | str:
    """The target modules PEFT actually applied (sorted), or "all" for a model without an adapter."""
    if not hasattr(model, "peft_config"):
        return "all"
    targets = model.peft_config["default"].target_modules
    return sorted(targets) if isinstance(targets, set | list) else targets


def _selection(trainer: Any) -> Selection | None:
    best = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, BestCheckpoint)]
    return best[0].selection() if best else None


def stopped_early(trainer: Any) -> bool:
    """A stop request ended training before the planned last step (a cancel, a worker shutdown):
    the run is incomplete and saves nothing. Stopping because the held-out score stopped improving
    (BestCheckpoint's patience) is a finished run."""
    selection = _selection(trainer)
    converged = selection is not None and selection.stopped_early
    return bool(trainer.state.global_step < trainer.state.max_steps and not converged)


def summarize(
    trainer: Any,
    *,
    mean_loss: float | None,
    tokens_per_epoch: int,
    started: float,
    params: tuple[int, int],
    hp: ResolvedHyperparameters,
    targets: list[str] | str,
    outputs: tuple[Path | None, Path | None],
    plan: SpeedPlan | None = None,
) -> TrainResult:
    """The run's TrainResult from the trainer's state plus what the state cannot know."""
    state = trainer.state
    epochs = float(state.epoch or 0.0)
    losses = [(int(e["step"]), float(e["loss"])) for e in state.log_history if "loss" in e]
    eval_losses = [float(e["eval_loss"]) for e in state.log_history if "eval_loss" in e]
    return TrainResult(
        steps=state.global_step,
        epochs=epochs,
        train_loss=losses[-1][1] if losses else None,
        mean_train_loss=mean_loss,
        eval_loss=eval_losses[-1] if eval_losses else None,
        loss_history=losses,
        trained_tokens=round(tokens_per_epoch * epochs),
        seconds=round(time.monotonic() - started, 3),
        trainable_params=params[0],
        total_params=params[1],
        hyperparameters=hp,
        target_modules=targets,
        stopped_early=stopped_early(trainer),
        adapter_dir=outputs[0],
        merged_dir=outputs[1],
        speed_plan=plan,
        checkpoint_selection=_selection(trainer),
    )


def run_recipe_cli(
    argv: Sequence[str] | None, doc: str | None, config_cls: Any, train_fn: Any, example: str
) -> None:
    """The command line every recipe shares: --config YAML plus dotted key=value overrides."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", type=Path, required=True, help=f"YAML file with {config_cls.__name__} fields"
    )
    parser.add_argument("overrides", nargs="*", help=f"key=value, dotted for nested fields: {example}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_cls.from_yaml(args.config, args.overrides)
    if not (cfg.base_model_dir / "config.json").is_file():
        parser.error(
            f"{cfg.base_model_dir} is not a checkpoint directory; "
            "`python -m recipes.base_models resolve <model id>` prints (and prepares) one"
        )
    if cfg.processes > 1 and not launched():  # this command again, as cfg.processes ranks
        module = train_fn.__module__
        if module == "__main__":  # run as `python -m recipes.<name>`: its import name is its spec's
            module = sys.modules["__main__"].__spec__.name  # type: ignore[union-attr]
        launch(module, [str(a) for a in (argv if argv is not None else sys.argv[1:])], cfg.processes)
        return
    result = train_fn(cfg)  # with disable_tqdm, Trainer's PrinterCallback prints each log line
    if is_main_process():
        print(result.model_dump_json(indent=2))  # noqa: T201
