"""Train: the recipe the job's method and training type name, in a child process, resumable."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from domain.chat_rows import to_jsonl
from domain.job_config import Hyperparameters, held_out_count
from domain.lists import METHODS, recipe_for
from infra.db import session_scope
from infra.models import Checkpoint, Job
from infra.settings import get_settings
from services.errors import EdgetuneError
from worker.context import JobContext
from worker.held_out import read_rows

if TYPE_CHECKING:
    from recipes.training_common import TrainResult
from worker.stages.common import made_from, other_base_dir, stop_check
from worker.train_process import run_recipe_in_child


def _split_eval(ctx: JobContext) -> None:
    """No eval file given: hold out ~10% of the training rows (seeded), at least what the gate
    needs, at most 64, never more than half (infra/job_config.held_out_count)."""
    rows = read_rows(Path(ctx.state["train_path"]))
    rng = random.Random(ctx.config.seed)
    rng.shuffle(rows)
    n_eval = held_out_count(len(rows), ctx.config.gate.min_eval_rows)
    data = ctx.work_dir / "data"
    (data / "train_split.jsonl").write_bytes(to_jsonl(rows[n_eval:]))
    (data / "eval.jsonl").write_bytes(to_jsonl(rows[:n_eval]))
    ctx.state["train_path"], ctx.state["eval_path"] = (
        str(data / "train_split.jsonl"),
        str(data / "eval.jsonl"),
    )
    ctx.event(f"No validation file: held out {n_eval} of {len(rows)} training rows for evaluation")


def _recipe(ctx: JobContext, model: str | None = None) -> Any:
    """The config of the recipe this job runs: LoRA or full, SFT or DPO, at the method's rate;
    for the job's model, or for one of a sweep's other bases (`model`), at that base's own rate,
    into a directory of its own."""
    from recipes.base_models import find_base_model
    from recipes.recipe_parts import RECIPE_PARTS, base_learning_rate

    cfg, s = ctx.config, get_settings()
    info = find_base_model(model or cfg.model, s.models_dir, s.model_cache_dir)
    assert info is not None  # checked when the job was created
    hp = cfg.method.hyperparameters
    base_dir = made_from(ctx, model or cfg.model)["base_model_dir"]
    common: dict[str, Any] = {
        "base_model_dir": Path(base_dir),
        "train_file": Path(ctx.state["train_path"]),
        "eval_file": Path(ctx.state["eval_path"]),
        "output_dir": other_base_dir(ctx, model) / "train" if model else ctx.work_dir / "train",
        "seed": cfg.seed,
        "hyperparameters": Hyperparameters(**hp.model_dump(include=set(Hyperparameters.model_fields))),
        "base_learning_rate": base_learning_rate(cfg.method.type, cfg.training_type, info.recommended_lr),
        "save_steps": s.checkpoint_steps,
        "processes": _processes(ctx),
    }
    parts = RECIPE_PARTS[recipe_for(cfg.method.type, cfg.training_type)]
    return parts.config(**common, **parts.job_fields(cfg))


def _processes(ctx: JobContext) -> int:
    """One process per GPU the job's plan gave it (state "gpus", recipes/distributed.py); a worker
    holding fewer cannot run it, which the queues prevent (infra/queue.py queue_for) unless the
    deployment runs one queue for all."""
    gpus, held = int(ctx.state.get("gpus", 1)), get_settings().worker_gpus
    if gpus > held:
        raise EdgetuneError(
            f"the job's plan trains it on {gpus} GPUs of one node and this worker holds {held} "
            "(EDGETUNE_WORKER_GPUS); run workers with that many GPUs, with compute pools",
            param=None,
            code="not_enough_gpus",
        )
    return gpus


def _selection_text(selection: Any) -> str:
    """The checkpoint choice in a sentence: the held-out scores measured, and which step ships."""
    if selection is None or selection.best_step is None:
        return ""
    scores = ", ".join(f"{v:.2f}@{s}" for s, v in selection.history)
    kept = "the best" if selection.restored else "the last, also the best"
    stop = "; stopped early, the score no longer improving" if selection.stopped_early else ""
    return f"; held-out scores {scores}: ships step {selection.best_step} ({kept}){stop}"


def _record_training(ctx: JobContext, result: TrainResult) -> dict[str, Any]:
    hp: dict[str, Any] = {
        "n_epochs": result.hyperparameters.n_epochs,
        "batch_size": result.hyperparameters.batch_size,
        "learning_rate_multiplier": ctx.config.method.hyperparameters.learning_rate_multiplier,
        "learning_rate": result.hyperparameters.learning_rate,
    }
    if METHODS[ctx.config.method.type].reference_model:
        hp["beta"] = ctx.config.method.beta  # how far from the reference the policy may move
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        job.hyperparameters, job.trained_tokens = hp, result.trained_tokens
    return hp


def _restore_stored_checkpoint(ctx: JobContext, checkpoints_dir: Path) -> None:
    """On a machine that lacks the job's newest checkpoint (a takeover after the first machine was
    lost), fetch it from the artifact store so the trainer resumes there instead of at step 0."""
    from recipes.training_common import checkpoint_step, latest_checkpoint
    from worker import checkpoint_store

    with session_scope() as session:
        stored = session.scalar(
            select(func.max(Checkpoint.step_number)).where(Checkpoint.job_id == ctx.job_id)
        )
    local = latest_checkpoint(checkpoints_dir) if checkpoints_dir.is_dir() else None
    if stored is None or (local is not None and checkpoint_step(local) >= stored):
        return
    checkpoint_store.download(ctx.org_id, ctx.job_id, stored, checkpoints_dir)
    ctx.event(
        f"Fetched the checkpoint at step {stored} from the artifact store (not on this machine)",
        data={"checkpoint_step": stored},
    )


def _training_stop(ctx: JobContext) -> Callable[[], BaseException | None]:
    """What ends the training process early (`stop_check` for the train stage)."""
    return stop_check(ctx, "train")


def _train_other_bases(
    ctx: JobContext, stop: Callable[[], BaseException | None]
) -> dict[str, dict[str, Any]]:
    """A sweep's other bases (targets[].models), each fine-tuned as the job's model was: same rows,
    settings and checkpoint choice, its own learning rate. Each one's outputs are stored as soon as
    it finishes, so a retry on the same machine trains only those not done (on another machine
    they train again: their checkpoints stay local). `stop` is the stage's one check, so the
    budget counts every base's time in it."""
    from recipes.dpo import DPOResult
    from worker.context import save_outputs

    bases: dict[str, dict[str, Any]] = ctx.state["other_bases"]
    for model in ctx.config.other_models:
        done = bases[model].get("merged_dir")
        if done and Path(done).is_dir():
            continue
        ctx.check_cancel()
        out = run_recipe_in_child(ctx, _recipe(ctx, model), stop, other_base=model)
        result: TrainResult = out.training if isinstance(out, DPOResult) else out
        bases[model] |= {
            "merged_dir": str(result.merged_dir),
            "adapter_dir": str(result.adapter_dir) if result.adapter_dir else None,
            "train_loss": result.train_loss,
            "steps": result.steps,
            "checkpoint_selection": (
                result.checkpoint_selection.model_dump() if result.checkpoint_selection else None
            ),
        }
        ctx.event(
            f"Training {model} finished (for the sweep): {result.steps} steps, final loss "
            f"{result.train_loss or float('nan'):.4f}, {result.trainable_params:,} trainable of "
            f"{result.total_params:,} parameters" + _selection_text(result.checkpoint_selection),
            type="metrics",
            data={"model": model, "steps": result.steps, "train_loss": result.train_loss},
        )
        save_outputs(ctx, {"other_bases": bases})
    return bases


def train(ctx: JobContext) -> dict[str, Any]:
    """Run the job's recipe in a process of its own (worker/train_process.py says why): a cancel or
    a budget stop ends it within about a second, and its GPU memory is freed when it exits."""
    from recipes.dpo import DPOResult
    from recipes.speed import describe

    if not ctx.state.get("eval_path"):
        _split_eval(ctx)
    recipe_cfg = _recipe(ctx)
    _restore_stored_checkpoint(ctx, recipe_cfg.output_dir / "checkpoints")
    stop = _training_stop(ctx)  # one for the stage: its running cost counts every base trained in it
    out = run_recipe_in_child(ctx, recipe_cfg, stop)
    result: TrainResult = out.training if isinstance(out, DPOResult) else out
    hp = _record_training(ctx, result)
    targets = result.target_modules if isinstance(result.target_modules, str) else list(result.target_modules)
    data: dict[str, Any] = {
        "steps": result.steps,
        "train_loss": result.train_loss,
        "trained_tokens": result.trained_tokens,
        "trainable_params": result.trainable_params,
        "target_modules": targets,
        "training_type": ctx.config.training_type,
        "speed_plan": result.speed_plan.model_dump() if result.speed_plan else None,
    }
    if isinstance(out, DPOResult):
        data |= {"reward_margins": out.reward_margins, "reward_accuracy": out.reward_accuracy}
    selection = result.checkpoint_selection
    if selection is not None:
        data["checkpoint_selection"] = selection.model_dump()
    ctx.event(
        f"Training finished ({ctx.config.method.type}, {ctx.config.training_type}): {result.steps} steps, "
        f"final loss {result.train_loss or float('nan'):.4f}, "
        f"{result.trainable_params:,} trainable of {result.total_params:,} parameters"
        + (f"; {describe(result.speed_plan)}" if result.speed_plan else "")
        + _selection_text(selection),
        type="metrics",
        data=data,
    )
    others = _train_other_bases(ctx, stop) if ctx.config.other_models else None
    return {
        **({"other_bases": others} if others else {}),
        "merged_dir": str(result.merged_dir),
        "adapter_dir": str(result.adapter_dir) if result.adapter_dir else None,
        "train_loss": result.train_loss,
        "hyperparameters": hp,
        "loss_history": result.loss_history,
        "checkpoint_selection": selection.model_dump() if selection else None,
    }
