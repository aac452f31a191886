"""Prepare: resolve the base model, note the device, fetch the customer's files."""

from __future__ import annotations

import os
from typing import Any

from infra.settings import get_settings
from worker.context import JobContext
from worker.stages.common import download_file


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
        out["train_path"] = str(download_file(ctx.config.training_file, data / "train.jsonl"))
    if ctx.config.validation_file:
        out["eval_path"] = str(download_file(ctx.config.validation_file, data / "eval.jsonl"))
    s = get_settings()
    base = resolve_base_model(ctx.config.model, s.models_dir, s.model_cache_dir)
    ctx.event(f"Base model {ctx.config.model} ready", data={"path": str(base), "device": out["device"]})
    out["base_model_dir"] = str(base)
    return out
