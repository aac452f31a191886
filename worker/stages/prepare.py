"""Prepare: resolve the base model and fetch the customer's files (the device is the machine's:
worker/machine.py, noted by the pipeline at each run)."""

from __future__ import annotations

from typing import Any

from infra.settings import get_settings
from worker.context import JobContext
from worker.stages.common import download_file


def prepare(ctx: JobContext) -> dict[str, Any]:
    """Copy the customer's files into the job (a later delete cannot break it) and load the base."""
    from recipes.base_models import resolve_base_model

    data = ctx.work_dir / "data"
    out: dict[str, Any] = {}
    if ctx.config.training_file:
        out["train_path"] = str(download_file(ctx.config.training_file, data / "train.jsonl"))
    if ctx.config.validation_file:
        out["eval_path"] = str(download_file(ctx.config.validation_file, data / "eval.jsonl"))
    s = get_settings()
    base = resolve_base_model(ctx.config.model, s.models_dir, s.model_cache_dir)
    ctx.event(
        f"Base model {ctx.config.model} ready", data={"path": str(base), "device": ctx.state.get("device")}
    )
    out["base_model_dir"] = str(base)
    if ctx.config.other_models:  # a sweep's other bases, each fine-tuned too (worker/stages/train.py)
        out["other_bases"] = {
            m: (ctx.state.get("other_bases") or {}).get(m, {})
            | {"base_model_dir": str(resolve_base_model(m, s.models_dir, s.model_cache_dir))}
            for m in ctx.config.other_models
        }
        ctx.event(f"Other bases for the sweep ready: {', '.join(ctx.config.other_models)}")
    return out
