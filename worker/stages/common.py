"""Helpers more than one stage uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.db import session_scope
from infra.models import File
from infra.storage import get_store
from services.errors import BudgetExhausted, InvalidRequest
from worker.context import JobCancelled, JobContext


def download_file(file_id: str, dest: Path) -> Path:
    with session_scope() as session:
        f = session.get(File, file_id)
        if f is None:
            raise InvalidRequest(f"file {file_id} was deleted before the job started", param="training_file")
        key = f.storage_key
    return get_store().download(key, dest)


def stop_check(ctx: JobContext, stage: str) -> Callable[[], BaseException | None]:
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


def made_from(ctx: JobContext, model: str) -> dict[str, Any]:
    """What the stages made of a base, by the same keys: the job's state for the job's model, its
    `other_bases` entry for a sweep's other base (base_model_dir, merged_dir, adapter_dir, eval,
    eval_results)."""
    if model == ctx.config.model:
        return ctx.state
    bases: dict[str, dict[str, Any]] = ctx.state["other_bases"]
    return bases[model]


def other_base_dir(ctx: JobContext, model: str) -> Path:
    """Where a sweep's other base (targets[].models) trains and exports: bases/<its place in the
    job's list of them>."""
    return ctx.work_dir / "bases" / str(ctx.config.other_models.index(model))
