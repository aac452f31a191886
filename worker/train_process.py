"""Training in a process of its own: the train stage starts `python -m worker.train_process`, which
runs one recipe and writes its result to a file, while the stage waits and watches the job. The
machinery (why a fresh interpreter, cancel and budget stops, crashes, the parent's death) is
worker/stage_process.py's, shared with the evaluate stage's process (worker/eval_process.py).

The child rebuilds the job's context from the database (settings reach it through the EDGETUNE_*
environment it inherits), so JobTrainerCallback writes progress events and checkpoint rows as it
did in the worker. Resuming is unchanged: recipes continue from output_dir/checkpoints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.lists import RECIPES, RecipeName
from services.errors import EdgetuneError
from worker.stage_process import POLL_S, ChildKind, child_main, load_context, run_in_child

if TYPE_CHECKING:
    from pydantic import BaseModel

    from recipes.dpo import DPOResult
    from recipes.training_common import TrainResult
    from worker.context import JobContext


class TrainingFailed(EdgetuneError):
    """The training process died (killed, e.g. out of memory, or crashed): the job fails with
    code `training_failed` and the end of the process's log, as ExportFailed does for a runtime."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param=None, code="training_failed")


# ---- which recipe -------------------------------------------------------------------------------


def recipe_parts(name: RecipeName) -> tuple[Callable[..., Any], type[BaseModel], type[BaseModel]]:
    """A recipe's train function, config class and result class (recipes/recipe_parts.py)."""
    from recipes.recipe_parts import RECIPE_PARTS

    parts = RECIPE_PARTS[name]
    return parts.train, parts.config, parts.result


def recipe_name(cfg: BaseModel) -> RecipeName:
    """The recipe a config belongs to: its config class says it (they are distinct)."""
    for name in RECIPES:
        if type(cfg) is recipe_parts(name)[1]:
            return name
    raise TypeError(f"no recipe takes a {type(cfg).__name__}")


def parse_result(name: RecipeName, text: str) -> TrainResult | DPOResult:
    return recipe_parts(name)[2].model_validate_json(text)  # type: ignore[return-value]


# ---- the parent (the train stage) ---------------------------------------------------------------

TRAIN_PROCESS = ChildKind(
    module="worker.train_process",
    dir_name="train-process",
    log_name="train.log",
    what="the training process",
    started="Training in process {pid} ({label})",
    pid_key="train_pid",
    error=TrainingFailed,
)


def run_recipe_in_child(
    ctx: JobContext,
    cfg: BaseModel,
    should_stop: Callable[[], BaseException | None],
    *,
    poll_s: float = POLL_S,
    other_base: str | None = None,
) -> TrainResult | DPOResult:
    """Run the recipe for `cfg` in a child process and return its result.

    `should_stop` is called about every `poll_s` seconds; an exception it returns (JobCancelled,
    BudgetExhausted) is raised here once the child is gone.

    Raises:
        TrainingFailed: the child exited non-zero or was killed; the message quotes its log's end.
    """
    name = recipe_name(cfg)
    spec = {"recipe": name, "config": cfg.model_dump(mode="json"), "other_base": other_base}
    label = f"{name}, {other_base}" if other_base else name
    text = run_in_child(ctx, TRAIN_PROCESS, spec, should_stop, label=label, poll_s=poll_s)
    return parse_result(name, text)


# ---- the child ----------------------------------------------------------------------------------


def run_recipe(spec: dict[str, Any], job_id: str, work_dir: Path) -> str:
    """The child's work: the spec's recipe on its config, reporting through the job's callback."""
    from recipes.distributed import is_main_process, launched, shards_states
    from worker.callbacks import JobTrainerCallback

    run, config_cls, _ = recipe_parts(spec["recipe"])
    cfg = config_cls.model_validate(spec["config"])
    ctx = load_context(job_id, work_dir)
    if launched():  # one of several ranks: rank 0 makes the replay rows, the others then read them
        from accelerate import PartialState

        with PartialState().main_process_first():
            cfg = _with_replay(ctx, cfg)
    else:
        cfg = _with_replay(ctx, cfg)
    main = is_main_process()
    # The parent watches cancel and budget and ends this process; the callback only reports, and
    # only from rank 0 (one event per step, one row per checkpoint).
    other_base = spec.get("other_base")  # a sweep's other base (worker/stages/train.py)
    callbacks: list[Any] = [JobTrainerCallback(ctx, watch_stop=False, other_base=other_base)] if main else []
    policy = ctx.config.checkpoints
    cuda = ctx.state.get("device") == "cuda"
    if policy.select == "best" and shards_states(cfg.processes, ctx.config.training_type, cuda):
        # BestCheckpoint scores the model by generating on the held-out rows, which a sharded
        # (FSDP) model cannot do rank by rank: such a run ships its last checkpoint. Data-parallel
        # ranks each hold the whole model: rank 0 scores (recipes/best_checkpoint.py).
        if main:
            ctx.event(
                f"Training on {cfg.processes} GPUs with the model sharded: the held-out checkpoint "
                "selection needs the whole model in one process, so this run ships its last checkpoint",
                level="warn",
            )
    elif policy.select == "best":
        from eval.in_training import held_out_score
        from recipes.best_checkpoint import BestCheckpoint
        from worker.held_out import held_out_rows

        # the recipe's eval_file, not ctx.state: the split a stage made is stored when it ends
        rows = held_out_rows(ctx.config, Path(spec["config"]["eval_file"]))
        score = held_out_score(rows, policy.eval_rows)
        best_dir = Path(spec["config"]["output_dir"]) / "best"
        callbacks.append(BestCheckpoint(score, best_dir, evals=policy.evals, patience=policy.patience))
    out = run(cfg, callbacks=callbacks)
    return str(out.model_dump_json())


def _with_replay(ctx: JobContext, cfg: Any) -> Any:
    """The recipe's config training on its rows plus the base model's own answers to general
    prompts (recipes/replay.py), written once to output_dir/replay.jsonl (a rerun reuses them).
    Generated here, in the training process: the one that may hold the GPU."""
    from domain.chat_rows import to_jsonl
    from domain.job_config import replay_applies, replay_count
    from recipes.chat_data import load_rows
    from recipes.replay import mixed

    if not replay_applies(ctx.config.replay, ctx.config.method.type):
        return cfg  # before reading the rows: a DPO file holds preference pairs, not chat rows
    rows = load_rows(cfg.train_file, normalize=False)
    n = replay_count(len(rows), ctx.config.replay, ctx.config.method.type)
    if n == 0:
        return cfg
    path = cfg.output_dir / "replay.jsonl"
    if not path.is_file():
        replay = _base_answers(cfg.base_model_dir, n)
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_jsonl(mixed(rows, replay, ctx.config.seed)))
        ctx.event(
            f"Replay: {len(replay)} rows of the base model's own answers to general prompts mixed into "
            f"{len(rows)} training rows, against forgetting",
            data={"replay_rows": len(replay), "train_rows": len(rows)},
        )
    return cfg.model_copy(update={"train_file": path})


def _base_answers(base_dir: Path, n: int) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoTokenizer

    from eval.runners import Device, generate_hf
    from recipes.replay import MAX_NEW_TOKENS, prompt_rows, replay_prompts, replay_rows

    prompts = replay_prompts(n)
    device: Device = "cuda" if torch.cuda.is_available() else "cpu"
    answers = generate_hf(base_dir, prompt_rows(prompts), MAX_NEW_TOKENS, device=device)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    # decoded without its end token: an answer a few tokens short of the cap ended on its own
    complete = [len(tokenizer(a)["input_ids"]) < MAX_NEW_TOKENS - 4 for a in answers]
    return replay_rows(prompts, answers, complete)


def main(argv: list[str] | None = None) -> int:
    return child_main(
        run_recipe,
        "Run one job's recipe (the train stage starts this).",
        argv,
        module=TRAIN_PROCESS.module,
        processes=lambda spec: int(spec["config"].get("processes", 1)),
    )


if __name__ == "__main__":
    sys.exit(main())
