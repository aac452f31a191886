"""The six stages of a job. Each takes the job context and returns its outputs (merged into
`jobs.state`); the heavy lifting lives in recipes/, synth/, eval/ and registry/."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from core.domain.chat_rows import to_jsonl
from core.domain.job_config import Hyperparameters, held_out_count
from core.errors import BudgetExhausted, EvalGateFailed, ExportFailed, InsufficientData, InvalidRequest
from infra.db import session_scope
from infra.models import Checkpoint, File, Job, Org
from infra.price_book import price_book
from infra.settings import get_settings
from infra.storage import get_store
from worker.context import JobCancelled, JobContext, Stage, save_state
from worker.held_out import held_out_rows, read_rows
from worker.publish import publish, store_rejected

if TYPE_CHECKING:
    from eval.runners import Device
    from eval.scoring import HeldOut
    from recipes.training_common import TrainResult
    from synth.teacher import TeacherClient


def _download_file(file_id: str, dest: Path) -> Path:
    with session_scope() as session:
        f = session.get(File, file_id)
        if f is None:
            raise InvalidRequest(f"file {file_id} was deleted before the job started", param="training_file")
        key = f.storage_key
    return get_store().download(key, dest)


def _gpu_present() -> bool:
    """Whether this machine has a usable GPU, asked of NVML: the CUDA runtime's own check would
    initialise CUDA in this (Celery) process, and only the training process should
    (worker/train_process.py). The setting is put back so that process makes the full check."""
    import torch

    name = "PYTORCH_NVML_BASED_CUDA_CHECK"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        return torch.cuda.is_available()
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def prepare(ctx: JobContext) -> dict[str, Any]:
    """Copy the customer's files into the job (a later delete cannot break it) and load the base."""
    from recipes.base_models import resolve_base_model

    data = ctx.work_dir / "data"
    out: dict[str, Any] = {"device": "cuda" if _gpu_present() else "cpu"}
    if ctx.config.training_file:
        out["train_path"] = str(_download_file(ctx.config.training_file, data / "train.jsonl"))
    if ctx.config.validation_file:
        out["eval_path"] = str(_download_file(ctx.config.validation_file, data / "eval.jsonl"))
    s = get_settings()
    base = resolve_base_model(ctx.config.model, s.models_dir, s.model_cache_dir)
    ctx.event(f"Base model {ctx.config.model} ready", data={"path": str(base), "device": out["device"]})
    out["base_model_dir"] = str(base)
    return out


def _teacher(ctx: JobContext) -> AbstractContextManager[TeacherClient]:
    """The server's teacher (EDGETUNE_TEACHER_*, else the bundled SmolLM2 on llama.cpp), its cost
    capped at what the job's budget_usd leaves: the run stops at the cap instead of overshooting."""
    from core.schemas.synthetic_datasets import TeacherOptions
    from core.services.synthetic_datasets import open_teacher

    max_cost = None
    if ctx.config.budget_usd is not None:
        with session_scope() as session:
            job = session.get(Job, ctx.job_id)
            spent = float(job.total_cost_usd or 0.0) if job else 0.0
        max_cost = max(ctx.config.budget_usd - spent, 1e-9)
    return open_teacher(TeacherOptions(max_cost_usd=max_cost), notify=ctx.event)


def _store_rows(ctx: JobContext, rows: list[dict[str, Any]], name: str) -> str:
    """Save generated rows as a file of the org (the dataset API's store_rows) and list it in the
    job's result_files."""
    from core.services.synthetic_datasets import store_rows

    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        org = session.get(Org, job.org_id)
        assert org is not None
        f = store_rows(session, org, rows, f"{ctx.job_id}-{name}.jsonl")
        job.result_files = [*(job.result_files or []), f.id]
        return f.id


def synthesize(ctx: JobContext) -> dict[str, Any]:
    """A job with a task and no training file: the same synthesis as POST /v1/synthetic_datasets,
    holding out what the job's gate needs. Each round is an event (kept against asked); a set
    below its floor (synth/floor.py) ends the job `insufficient_data` before training, billed only
    for the teacher's tokens, with what was kept stored for the customer to read."""
    if ctx.config.training_file or ctx.config.task is None:
        return {}
    if stored := ctx.state.get("synth_files"):  # made by an earlier attempt, on a lost machine
        data = ctx.work_dir / "data"
        return {
            "train_path": str(_download_file(stored["train"], data / "train.jsonl")),
            "eval_path": str(_download_file(stored["eval"], data / "eval.jsonl")),
        }
    from synth.generate import synthesize as run_synth

    with _teacher(ctx) as client:
        result = run_synth(
            ctx.config.task,
            client,
            seed=ctx.config.seed,
            should_stop=ctx.cancelled,
            on_round=lambda r: _round_event(ctx, r),
            min_eval_rows=ctx.config.gate.min_eval_rows,
        )
    ctx.check_cancel()
    _bill_teacher(ctx, result.usage.total_tokens)
    files = {
        name: _store_rows(ctx, rows, name)
        for name, rows in (("train", result.train_rows), ("eval", result.eval_rows))
        if rows
    }
    report = result.report
    if report["short"]:
        ctx.event(
            "Synthesis ended short of its floor", level="error", data={"report": report, "files": files}
        )
        raise _insufficient(report)
    data = ctx.work_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_bytes(to_jsonl(result.train_rows))
    (data / "eval.jsonl").write_bytes(to_jsonl(result.eval_rows))
    ctx.event(
        f"Synthesized {report['kept']} of {report['asked']} rows asked: {report['train']} training and "
        f"{report['eval']} held out",
        type="metrics",
        data={"report": report, "teacher_tokens": result.usage.total_tokens, "files": files},
    )
    return {
        "train_path": str(data / "train.jsonl"),
        "eval_path": str(data / "eval.jsonl"),
        "synth_report": report,
        "synth_files": files,
    }


def _round_event(ctx: JobContext, r: dict[str, Any]) -> None:
    steer = f"; steered against {r['steered_against']}" if r["steered_against"] else ""
    ctx.event(
        f"Synthesis round {r['round']}: {r['kept_total']} of {r['asked']} rows kept "
        f"(+{r['kept']} from {r['requested']} requests; top drop reasons: {r['top_drop_reasons']}{steer})",
        data={"synthesis_round": r},
    )


def _bill_teacher(ctx: JobContext, tokens: int) -> None:
    from core.services.jobs import record_usage

    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        record_usage(
            session,
            job,
            stage="synthesize",
            unit="teacher_1k_tokens",
            quantity=tokens / 1000,
            unit_price=price_book().teacher_1k_tokens,
        )


def _insufficient(report: dict[str, Any]) -> InsufficientData:
    from synth.floor import top_drop_reasons

    dropped = sum(report["dropped_by_reason"].values())
    return InsufficientData(
        f"synthesis kept {report['kept']} of the {report['asked']} rows asked ({report['generated']} "
        f"generated, {dropped} dropped; top drop reasons: {top_drop_reasons(report['dropped_by_reason'])}; "
        f"stopped: {report['stopped'] or 'no'}): {'; '.join(report['short'])}. Nothing was trained or "
        "published; the teacher's tokens and the preparation were billed, no training. Describe the "
        "task more concretely, add seed examples, use a stronger teacher, or upload a training file",
        details={
            k: report[k] for k in ("asked", "kept", "train", "eval", "dropped_by_reason", "floor", "short")
        },
    )


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


def _recipe(ctx: JobContext) -> Any:
    """The config of the recipe this job runs: LoRA or full, SFT or DPO, at the method's rate."""
    from recipes import dpo, full_sft, lora_sft
    from recipes.base_models import find_base_model
    from recipes.learning_rates import base_learning_rate

    cfg, s = ctx.config, get_settings()
    info = find_base_model(cfg.model, s.models_dir, s.model_cache_dir)
    assert info is not None  # checked when the job was created
    hp = cfg.method.hyperparameters
    common: dict[str, Any] = {
        "base_model_dir": Path(ctx.state["base_model_dir"]),
        "train_file": Path(ctx.state["train_path"]),
        "eval_file": Path(ctx.state["eval_path"]),
        "output_dir": ctx.work_dir / "train",
        "seed": cfg.seed,
        "hyperparameters": Hyperparameters(**hp.model_dump(include=set(Hyperparameters.model_fields))),
        "base_learning_rate": base_learning_rate(cfg.method.type, cfg.training_type, info.recommended_lr),
        "save_steps": s.checkpoint_steps,
    }
    lora = cfg.lora if cfg.training_type == "lora" else None
    if cfg.method.type == "dpo":
        return dpo.DPORecipeConfig(**common, lora=lora, beta=cfg.method.beta)
    if lora is None:
        return full_sft.FullSFTConfig(**common)
    return lora_sft.LoraSFTConfig(**common, lora=lora)


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
    if ctx.config.method.type == "dpo":
        hp["beta"] = ctx.config.method.beta
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


def _stop_check(ctx: JobContext, stage: str) -> Callable[[], BaseException | None]:
    """What ends a stage's process early, checked about once a second by the stage: the job
    cancelled, or its budget reached counting this stage's running cost (as the ledger would
    bill it); None while neither."""
    started = time.monotonic()

    def check() -> BaseException | None:
        if ctx.cancelled():
            return JobCancelled()
        if ctx.config.budget_usd is not None:
            running = (time.monotonic() - started) * ctx.stage_rate_usd_per_s(stage)
            try:
                ctx.check_budget(running)
            except BudgetExhausted as exc:
                return exc
        return None

    return check


def _training_stop(ctx: JobContext) -> Callable[[], BaseException | None]:
    """What ends the training process early (`_stop_check` for the train stage)."""
    return _stop_check(ctx, "train")


def train(ctx: JobContext) -> dict[str, Any]:
    """Run the job's recipe in a process of its own (worker/train_process.py says why): a cancel or
    a budget stop ends it within about a second, and its GPU memory is freed when it exits."""
    from recipes.dpo import DPOResult
    from recipes.speed import describe
    from worker.train_process import run_recipe_in_child

    if not ctx.state.get("eval_path"):
        _split_eval(ctx)
    recipe_cfg = _recipe(ctx)
    _restore_stored_checkpoint(ctx, recipe_cfg.output_dir / "checkpoints")
    out = run_recipe_in_child(ctx, recipe_cfg, _training_stop(ctx))
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
    return {
        "merged_dir": str(result.merged_dir),
        "adapter_dir": str(result.adapter_dir) if result.adapter_dir else None,
        "train_loss": result.train_loss,
        "hyperparameters": hp,
        "loss_history": result.loss_history,
        "checkpoint_selection": selection.model_dump() if selection else None,
    }


def eval_rows(ctx: JobContext) -> HeldOut:
    """The job's held-out rows and how to score them (`held_out_rows`)."""
    return held_out_rows(ctx.config, Path(ctx.state["eval_path"]))


def evaluate(ctx: JobContext, *, in_child: bool | None = None) -> dict[str, Any]:
    """Score base and fine-tuned on the held-out rows, and on the fixed general-ability probe
    (eval/probe.py) that the gate's max_probe_drop reads to catch forgetting.

    Where it runs: on a GPU worker (the job's device, from prepare's NVML check, is "cuda") in a
    process of its own (worker/eval_process.py), which loads both models in bf16 on the GPU and
    decodes in batches; CUDA never enters this (Celery) process, the GPU memory goes back when
    the process exits, and a cancel or budget stop ends it within about a second. On a CPU worker
    it runs here, in fp32, one row at a time, as it always has. `in_child` overrides the choice
    (the tests run the child path on the CPU; its scores are the same as in process)."""
    from eval.probe import load_probe
    from eval.scoring import score_models

    held_out, probe, shots = eval_rows(ctx), load_probe(), _shots(ctx)
    base_dir, tuned_dir = Path(ctx.state["base_model_dir"]), Path(ctx.state["merged_dir"])
    device: Device = "cuda" if ctx.state.get("device") == "cuda" else "cpu"
    if in_child if in_child is not None else device == "cuda":
        from worker.eval_process import score_models_in_child

        stop = _stop_check(ctx, "evaluate")
        scored = score_models_in_child(ctx, base_dir, tuned_dir, held_out, probe, device, stop, shots)
    else:
        scored = score_models(
            base_dir, tuned_dir, held_out, probe, device=device, between=ctx.check_cancel, shots=shots
        )
    base, tuned = scored["base"], scored["fine_tuned"]
    probe_base, probe_tuned = scored["probe_base"], scored["probe_fine_tuned"]
    result = {
        "metric": tuned.metric,
        "n": tuned.n,
        "base": _score(base),
        "fine_tuned": _score(tuned),
        "delta": round(tuned.score - base.score, 4),
        "probe": {
            "metric": probe_tuned.metric,
            "n": probe_tuned.n,
            "base": _score(probe_base),
            "fine_tuned": _score(probe_tuned),
            "drop": round(probe_base.score - probe_tuned.score, 4),
        },
    }
    prompted = scored.get("base_prompted")
    if prompted is not None:
        result["base_prompted"] = {**_score(prompted), "shots": prompted.report.get("shots")}
    ctx.event(
        f"Eval on {tuned.n} held-out rows: {tuned.metric} base {base.score:.3f}"
        + (f", base prompted ({prompted.report.get('shots')}-shot) {prompted.score:.3f}" if prompted else "")
        + f" -> fine-tuned {tuned.score:.3f}; general-ability probe ({probe_tuned.n} items) "
        f"{probe_base.score:.3f} -> {probe_tuned.score:.3f}",
        type="metrics",
        data=result,
    )
    # the full results (every metric, per-class report) feed the gate and the job's report
    results = {name: r.to_dict() for name, r in scored.items()}
    return {"eval": result, "eval_results": results}


def _shots(ctx: JobContext) -> list[dict[str, Any]] | None:
    """The training rows the prompted base draws its k examples from (eval/prompting.py), in
    the chat shape the held-out rows have. None for DPO: its rows are preference pairs, and
    its baseline is the bare base."""
    from recipes.chat_data import normalize_row

    if ctx.config.method.type == "dpo":
        return None
    return [normalize_row(r) for r in read_rows(Path(ctx.state["train_path"]))]


def _score(r: Any) -> dict[str, Any]:
    return {"score": round(r.score, 4), "ci_low": round(r.ci_low, 4), "ci_high": round(r.ci_high, 4)}


def _score_artifact(
    profile: Any, path: Path, held_out: HeldOut, entry: dict[str, Any], grammar: Path | None = None
) -> None:
    """Score the artifact in its own runtime configured to the device's context cap (capped by the
    model's trained context, past which no runtime should be set), recording decode speed and
    memory for the gate's budgets. A GGUF with the task's grammar is scored as it ships, under
    the grammar (what the gate reads), and once without it (`eval_result_free`), so the report
    shows what constraining bought."""
    from eval.runners import ArtifactRunError, evaluate_model
    from eval.runtime_stats import RuntimeStats
    from export.profiles import RUNTIMES, eval_context

    rows, task_type, labels = held_out
    stats = RuntimeStats(runtime=RUNTIMES[profile.format])
    n_ctx = eval_context(profile, path)
    text = grammar.read_text() if grammar is not None and profile.format == "gguf" else None
    if text is not None:  # in its own process too (stats given), so a runtime crash is contained
        unused = RuntimeStats(runtime=stats.runtime)
        free = evaluate_model(profile.format, path, rows, task_type, labels, n_ctx=n_ctx, stats=unused)
        entry["eval_result_free"] = free.to_dict()
        entry["grammar"] = str(grammar)
    # the runner kind is the format's name: "gguf" in llama.cpp, "onnx" in onnxruntime
    try:
        scored = evaluate_model(
            profile.format, path, rows, task_type, labels, n_ctx=n_ctx, stats=stats, grammar=text
        )
    except ValueError as exc:  # llama.cpp refused the grammar for this model's vocabulary
        raise ArtifactRunError(f"the task grammar could not be used with {path.name}: {exc}") from exc
    entry["eval"] = {"metric": scored.metric, **_score(scored)}
    if text is not None:
        entry["eval"]["free"] = entry["eval_result_free"]["score"]
    entry["eval_result"] = scored.to_dict()
    entry["runtime_stats"] = stats.to_dict()


def _task_grammar(ctx: JobContext, held_out: HeldOut) -> Path | None:
    """The task's llama.cpp grammar (eval/grammar.py) written beside the exports, or None when
    the task has nothing to constrain. An upload scored as classification gets its labels from
    every answer it trained and is scored on, so no label the model learned is masked out."""
    from eval.grammar import grammar_for

    _, task_type, labels = held_out
    task = ctx.config.task
    if task is None and task_type == "classification":
        from recipes.chat_data import normalize_row
        from recipes.preference_data import as_chat_row

        # a preference pair's chosen answer is what the model learned to give
        as_chat = as_chat_row if ctx.config.method.type == "dpo" else normalize_row
        trained = [as_chat(r) for r in read_rows(Path(ctx.state["train_path"]))]
        answers = {r["messages"][-1].get("content") or "" for r in trained}
        labels = sorted(answers.union(labels or []))
    text = grammar_for(
        task_type,
        labels,
        task.output_schema if task is not None else None,
        task.tools if task is not None else None,
    )
    if text is None:
        return None
    path = ctx.work_dir / "export" / "task.gbnf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _adapter_entry(ctx: JobContext, adapter_dir: str) -> dict[str, Any]:
    from export.adapter_gguf import adapter_info
    from export.targets import gguf_adapter

    base_dir = Path(ctx.state["base_model_dir"])
    adapter = gguf_adapter(Path(adapter_dir), base_dir, ctx.work_dir / "export", ctx.config.model)
    return {
        "files": [str(adapter)],
        "info": adapter_info(adapter, Path(adapter_dir), base_dir, ctx.config.model),
    }


def _export_one(
    ctx: JobContext, profile: Any, held_out: HeldOut, adapter_dir: str | None, grammar: Path | None
) -> dict[str, Any]:
    """One target's files, scored in their runtime, with the profile's budgets measured."""
    from eval.runners import ArtifactRunError
    from export.device_budgets import budget_checks
    from export.onnx_export import OnnxExportError
    from export.profiles import RUNTIMES
    from export.targets import export_target

    target = profile.name
    try:
        paths = export_target(
            Path(ctx.state["merged_dir"]),
            profile,
            ctx.work_dir / "export",
            adapter_dir=Path(adapter_dir) if adapter_dir else None,
        )
        entry: dict[str, Any] = {"files": [str(p) for p in paths]}
        if profile.format in RUNTIMES:
            _score_artifact(profile, paths[0], held_out, entry, grammar)
    except (OnnxExportError, ArtifactRunError) as exc:
        raise ExportFailed(ctx.config.targets.index(target), f"{target}: {exc}") from exc
    entry["budgets"] = [b.model_dump() for b in budget_checks(profile, paths, entry.get("runtime_stats"))]
    return entry


def export(ctx: JobContext) -> dict[str, Any]:
    from export.profiles import get_profile

    adapter_dir = ctx.state.get("adapter_dir")  # LoRA jobs; None after a full fine-tune
    held_out = eval_rows(ctx)  # read once: every artifact answers the same rows
    grammar = _task_grammar(ctx, held_out)  # one grammar for every GGUF target
    exported: dict[str, Any] = {}
    adapter_entry: dict[str, Any] | None = None  # converted and described once, shipped per GGUF target
    for target in ctx.config.targets:
        ctx.check_cancel()
        profile = get_profile(target)
        entry = _export_one(ctx, profile, held_out, adapter_dir, grammar)
        note = ""
        if profile.format == "gguf" and adapter_dir:
            # The adapter alone, for devices that already hold the base GGUF; publish ships it as
            # its own artifact `<target>-adapter`. Converted once, it fits every quantization.
            adapter_entry = adapter_entry or _adapter_entry(ctx, adapter_dir)
            entry["adapter"] = adapter_entry
            size = Path(adapter_entry["files"][0]).stat().st_size
            note = f" + LoRA adapter ({size / 2**20:.1f} MB)"
        exported[target] = entry
        ctx.event(
            f"Exported {target}: {profile.format} {profile.quantization or ''}".rstrip() + note,
            data={"target": target, **{k: v for k, v in entry.items() if k in ("eval", "runtime_stats")}},
        )
    return {"exported": exported}


def gate(ctx: JobContext) -> dict[str, Any]:
    """Apply the job's gate policy to base, fine-tuned and every scored artifact (eval/gate.py).
    A failing gate ends the job `failed` with code `eval_gate_failed` and every failing check in
    its message. Its artifacts are stored first with status `rejected` (downloadable, to see what
    went wrong) under a registry version no alias can point at; the publish stage never runs."""
    from eval.gate import BudgetCheck, decide_gate
    from eval.metrics import EvalResult

    results = ctx.state["eval_results"]
    artifacts = {
        target: EvalResult.from_dict(entry["eval_result"])
        for target, entry in ctx.state["exported"].items()
        if "eval_result" in entry
    }
    # A job evaluated before the probe existed has none: decide_gate then notes that
    # max_probe_drop was not checked rather than failing it.
    probes = {k: EvalResult.from_dict(results[k]) for k in ("probe_base", "probe_fine_tuned") if k in results}
    base, baseline, baseline_note = _baseline(ctx.config.gate.baseline, results)
    decision = decide_gate(
        ctx.config.gate,
        EvalResult.from_dict(base),
        EvalResult.from_dict(results["fine_tuned"]),
        artifacts,
        probe_base=probes.get("probe_base"),
        probe_finetuned=probes.get("probe_fine_tuned"),
        # a job exported before budgets were recorded has none: only the other rules apply
        budgets={
            target: [BudgetCheck.model_validate(b) for b in entry["budgets"]]
            for target, entry in ctx.state["exported"].items()
            if "budgets" in entry
        },
        baseline=baseline,
    )
    decision.notes += baseline_note
    verdict = decision.model_dump()
    if not decision.passed:
        save_state(ctx, {"gate": verdict})
        ctx.event("Eval gate failed: " + "; ".join(decision.reasons), level="error", data=verdict)
        store_rejected(ctx)
        raise EvalGateFailed(
            "the eval gate refused this model: "
            + "; ".join(decision.reasons)
            + ". Its artifacts were kept for inspection with status rejected and were not published"
        )
    ctx.event(
        f"Eval gate passed on {decision.metric} ({len(decision.checks)} checks)"
        + (f"; note: {'; '.join(decision.notes)}" if decision.notes else ""),
        data=verdict,
    )
    return {"gate": verdict}


def _baseline(want: str, results: dict[str, Any]) -> tuple[dict[str, Any], str, list[str]]:
    """The result min_delta compares with, its name in the verdict, and a note when the policy
    asked for the prompted base and the job has none (DPO, or a job evaluated before it existed)."""
    if want == "prompted" and "base_prompted" in results:
        shots = results["base_prompted"].get("report", {}).get("shots")
        return results["base_prompted"], f"prompted base ({shots}-shot)", []
    if want == "prompted":
        note = "no prompted-base score for this job: min_delta compared the fine-tune with the bare base"
        return results["base"], "base", [note]
    return results["base"], "base", []


STAGES: list[tuple[str, Stage]] = [
    ("prepare", prepare),
    ("synthesize", synthesize),
    ("train", train),
    ("evaluate", evaluate),
    ("export", export),
    ("gate", gate),
    ("publish", publish),
]
