"""The six stages of a job. Each takes the job context and returns its outputs (merged into
`jobs.state`); the heavy lifting lives in recipes/, synth/, eval/ and registry/."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

from api.services import files as file_service
from infra.chat_rows import parse_jsonl, to_jsonl
from infra.db import session_scope
from infra.job_config import MAX_EVAL_ROWS, held_out_count
from infra.models import File, Job, Org
from infra.price_book import price_book
from infra.settings import get_settings
from infra.storage import get_store
from worker.callbacks import JobTrainerCallback
from worker.pipeline import JobCancelled, JobContext, Stage
from worker.publish import publish

TaskType = Literal["classification", "generation"]


def _download_file(file_id: str, dest: Path) -> Path:
    with session_scope() as session:
        f = session.get(File, file_id)
        if f is None:
            from infra.errors import InvalidRequest

            raise InvalidRequest(f"file {file_id} was deleted before the job started", param="training_file")
        key = f.storage_key
    return get_store().download(key, dest)


def prepare(ctx: JobContext) -> dict[str, Any]:
    """Copy the customer's files into the job (a later delete cannot break it) and load the base."""
    import torch

    from recipes.base_models import resolve_base_model

    data = ctx.work_dir / "data"
    out: dict[str, Any] = {"device": "cuda" if torch.cuda.is_available() else "cpu"}
    if ctx.config.training_file:
        out["train_path"] = str(_download_file(ctx.config.training_file, data / "train.jsonl"))
    if ctx.config.validation_file:
        out["eval_path"] = str(_download_file(ctx.config.validation_file, data / "eval.jsonl"))
    s = get_settings()
    base = resolve_base_model(ctx.config.model, s.models_dir, s.model_cache_dir)
    ctx.event(f"Base model {ctx.config.model} ready", data={"path": str(base), "device": out["device"]})
    out["base_model_dir"] = str(base)
    return out


def _teacher(ctx: JobContext) -> AbstractContextManager[str]:
    from synth.llama_server import bundled_teacher_gguf, serve_gguf

    s = get_settings()
    if s.teacher_base_url:
        return nullcontext(s.teacher_base_url)
    ctx.event("No teacher endpoint configured: serving the bundled SmolLM2-135M-Instruct with llama.cpp")
    return serve_gguf(bundled_teacher_gguf())


def _store_rows(ctx: JobContext, rows: list[dict[str, Any]], name: str) -> str:
    """Save generated rows as a file of the org, validated by the same rule as uploads."""
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        org = session.get(Org, job.org_id)
        assert org is not None
        f = file_service.create_file(
            session=session,
            org=org,
            filename=f"{ctx.job_id}-{name}.jsonl",
            purpose="fine-tune",
            data=to_jsonl(rows),
        )
        job.result_files = [*(job.result_files or []), f.id]
        return f.id


def synthesize(ctx: JobContext) -> dict[str, Any]:
    if ctx.config.training_file or ctx.config.task is None:
        return {}
    from api.services.jobs import record_usage
    from synth.generate import synthesize as run_synth
    from synth.teacher import TeacherClient, TeacherSettings

    s = get_settings()
    with _teacher(ctx) as base_url:
        settings = TeacherSettings(base_url=base_url, model=s.teacher_model, api_key=s.teacher_api_key)
        with TeacherClient(settings) as client:
            result = run_synth(ctx.config.task, client, seed=ctx.config.seed, should_stop=ctx.cancelled)
    ctx.check_cancel()
    if not result.train_rows or not result.eval_rows:
        raise RuntimeError(f"the teacher produced no usable rows: {result.report}")
    data = ctx.work_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_bytes(to_jsonl(result.train_rows))
    (data / "eval.jsonl").write_bytes(to_jsonl(result.eval_rows))
    train_id, eval_id = (
        _store_rows(ctx, result.train_rows, "train"),
        _store_rows(ctx, result.eval_rows, "eval"),
    )
    tokens = result.usage.prompt_tokens + result.usage.completion_tokens
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
    ctx.event(
        f"Synthesized {len(result.train_rows)} training and {len(result.eval_rows)} eval rows",
        type="metrics",
        data={
            "report": result.report,
            "teacher_tokens": tokens,
            "train_file": train_id,
            "eval_file": eval_id,
        },
    )
    return {
        "train_path": str(data / "train.jsonl"),
        "eval_path": str(data / "eval.jsonl"),
        "synth_report": result.report,
    }


def _split_eval(ctx: JobContext) -> None:
    """No eval file given: hold out ~10% of the training rows (seeded), at least 2, at most 64."""
    rows, _ = parse_jsonl(Path(ctx.state["train_path"]).read_bytes())
    rng = random.Random(ctx.config.seed)
    rng.shuffle(rows)
    n_eval = held_out_count(len(rows))
    data = ctx.work_dir / "data"
    (data / "train_split.jsonl").write_bytes(to_jsonl(rows[n_eval:]))
    (data / "eval.jsonl").write_bytes(to_jsonl(rows[:n_eval]))
    ctx.state["train_path"], ctx.state["eval_path"] = (
        str(data / "train_split.jsonl"),
        str(data / "eval.jsonl"),
    )
    ctx.event(f"No validation file: held out {n_eval} of {len(rows)} training rows for evaluation")


def _recommended_lr(model_id: str) -> float:
    from recipes.base_models import find_base_model

    s = get_settings()
    info = find_base_model(model_id, s.models_dir, s.model_cache_dir)
    assert info is not None  # checked when the job was created
    return info.recommended_lr


def train(ctx: JobContext) -> dict[str, Any]:
    from recipes.lora_sft import LoraSFTConfig
    from recipes.lora_sft import train as run_train

    if not ctx.state.get("eval_path"):
        _split_eval(ctx)
    cfg = LoraSFTConfig(
        base_model_dir=Path(ctx.state["base_model_dir"]),
        train_file=Path(ctx.state["train_path"]),
        output_dir=ctx.work_dir / "train",
        seed=ctx.config.seed,
        hyperparameters=ctx.config.method.supervised.hyperparameters,
        lora=ctx.config.lora,
        eval_file=Path(ctx.state["eval_path"]),
        base_learning_rate=_recommended_lr(ctx.config.model),
        save_steps=get_settings().checkpoint_steps,
    )
    callback = JobTrainerCallback(ctx)
    result = run_train(cfg, callbacks=[callback])
    if callback.stopped_for_cancel:
        raise JobCancelled()
    if callback.budget_error is not None:
        raise callback.budget_error
    hp = {
        "n_epochs": result.hyperparameters.n_epochs,
        "batch_size": result.hyperparameters.batch_size,
        "learning_rate_multiplier": ctx.config.method.supervised.hyperparameters.learning_rate_multiplier,
        "learning_rate": result.hyperparameters.learning_rate,
    }
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        job.hyperparameters, job.trained_tokens = hp, result.trained_tokens
    ctx.event(
        f"Training finished: {result.steps} steps, final loss {result.train_loss:.4f}, "
        f"{result.trainable_params:,} trainable of {result.total_params:,} parameters",
        type="metrics",
        data={
            "steps": result.steps,
            "train_loss": result.train_loss,
            "trained_tokens": result.trained_tokens,
            "trainable_params": result.trainable_params,
            "target_modules": list(result.target_modules),
        },
    )
    return {
        "merged_dir": str(result.merged_dir),
        "adapter_dir": str(result.adapter_dir),
        "train_loss": result.train_loss,
        "hyperparameters": hp,
    }


def eval_rows(ctx: JobContext) -> tuple[list[dict[str, Any]], TaskType, list[str] | None]:
    """The held-out rows and how to score them: by label accuracy when the answers are a small
    label set (a task with labels, or an upload whose answers repeat), else by token F1."""
    rows, _ = parse_jsonl(Path(ctx.state["eval_path"]).read_bytes())
    rows = rows[:MAX_EVAL_ROWS]
    if ctx.config.task is not None:
        return rows, ctx.config.task.task_type, ctx.config.task.labels
    answers = [r["messages"][-1].get("content") or "" for r in rows]
    distinct = sorted(set(answers))
    if (
        len(distinct) <= 20
        and len(distinct) < max(len(answers) / 2, 2)
        and all(len(a) < 64 for a in distinct)
    ):
        return rows, "classification", distinct
    return rows, "generation", None


def evaluate(ctx: JobContext) -> dict[str, Any]:
    from eval.runners import evaluate_model

    rows, task_type, labels = eval_rows(ctx)
    base = evaluate_model("hf", Path(ctx.state["base_model_dir"]), rows, task_type, labels)
    ctx.check_cancel()
    tuned = evaluate_model("hf", Path(ctx.state["merged_dir"]), rows, task_type, labels)
    result = {
        "metric": tuned.metric,
        "n": tuned.n,
        "base": _score(base),
        "fine_tuned": _score(tuned),
        "delta": round(tuned.score - base.score, 4),
    }
    ctx.event(
        f"Eval on {tuned.n} held-out rows: {tuned.metric} base {base.score:.3f} -> "
        f"fine-tuned {tuned.score:.3f}",
        type="metrics",
        data=result,
    )
    return {"eval": result}


def _score(r: Any) -> dict[str, Any]:
    return {"score": round(r.score, 4), "ci_low": round(r.ci_low, 4), "ci_high": round(r.ci_high, 4)}


def export(ctx: JobContext) -> dict[str, Any]:
    from eval.runners import evaluate_model
    from registry.export import export_target
    from registry.profiles import get_profile

    rows, task_type, labels = eval_rows(ctx)
    exported: dict[str, Any] = {}
    for target in ctx.config.targets:
        ctx.check_cancel()
        profile = get_profile(target)
        paths = export_target(Path(ctx.state["merged_dir"]), profile, ctx.work_dir / "export")
        entry: dict[str, Any] = {"files": [str(p) for p in paths]}
        if profile.format == "gguf":  # score the artifact as shipped, in its own runtime
            scored = evaluate_model("gguf", paths[0], rows, task_type, labels)
            entry["eval"] = {"metric": scored.metric, **_score(scored)}
        exported[target] = entry
        ctx.event(
            f"Exported {target}: {profile.format} {profile.quantization or ''}".rstrip(),
            data={"target": target, **{k: v for k, v in entry.items() if k == "eval"}},
        )
    return {"exported": exported}


STAGES: list[tuple[str, Stage]] = [
    ("prepare", prepare),
    ("synthesize", synthesize),
    ("train", train),
    ("evaluate", evaluate),
    ("export", export),
    ("publish", publish),
]
