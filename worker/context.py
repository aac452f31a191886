"""What a stage of a job works with: its context (config, work dir, state, cancel and budget
checks), the stage type, and how a stage's outputs and compute class are recorded."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain.job_config import JobConfig
from domain.lists import GPU_STAGES
from infra.db import session_scope
from infra.models import Job
from infra.price_book import price_book
from infra.settings import get_settings
from services.errors import BudgetExhausted
from services.jobs import add_event


class JobCancelled(Exception):
    pass


@dataclass
class JobContext:
    job_id: str
    org_id: str
    config: JobConfig
    work_dir: Path
    state: dict[str, Any] = field(default_factory=dict)
    _cancel_checked_at: float = 0.0
    _cancelled: bool = False

    def event(
        self, message: str, *, level: str = "info", type: str = "message", data: dict[str, Any] | None = None
    ) -> None:
        with session_scope() as session:
            add_event(session, self.job_id, message, level=level, type=type, data=data)

    def cancelled(self, max_age_s: float = 1.0) -> bool:
        """Whether the customer cancelled; reads the database at most once per `max_age_s`."""
        if self._cancelled or time.monotonic() - self._cancel_checked_at < max_age_s:
            return self._cancelled
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            self._cancelled = job is None or job.cancel_requested or job.status != "running"
        self._cancel_checked_at = time.monotonic()
        return self._cancelled

    def check_cancel(self) -> None:
        if self.cancelled(max_age_s=0.0):
            raise JobCancelled()

    def check_budget(self, running_usd: float = 0.0) -> None:
        """Stop the job once the ledger plus the running stage's cost so far reaches budget_usd.

        The rule on what is billed then: finished stages stay billed (the ledger cuts the last one
        at the cap); the stage that was running is not, as no failed or cancelled stage is billed.
        """
        cap = self.config.budget_usd
        if cap is None:
            return
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            spent = float(job.total_cost_usd or 0.0) if job else 0.0
        if spent + running_usd >= cap:
            raise BudgetExhausted(
                f"the job reached its budget_usd ${cap:.4f} (${spent:.4f} billed, "
                f"${running_usd:.4f} in the running stage); it was stopped and nothing was published",
                param="budget_usd",
                code="budget_exhausted",
            )

    def stage_rate_usd_per_s(self, stage: str) -> float:
        gpu = self.state.get("device") == "cuda" and stage in GPU_STAGES
        return price_book().compute_rate(billing_compute(gpu)) * self.gpus_held(stage)

    def gpus_held(self, stage: str) -> int:
        """GPUs a stage holds, each billed at the class rate: a multi-GPU job's N (its plan's,
        kept in its state) for the GPU stages run on CUDA, else 1."""
        gpu = self.state.get("device") == "cuda" and stage in GPU_STAGES
        return int(self.state.get("gpus", 1)) if gpu else 1


Stage = Callable[[JobContext], dict[str, Any]]


def billing_compute(gpu: bool) -> str:
    """The price-book compute class a stage is billed at: the configured GPU class for stages that
    ran on CUDA (H100 when none is configured, the book's reference GPU), else the CPU rate."""
    if not gpu:
        return "cpu"
    configured = get_settings().worker_compute
    return configured if configured != "cpu" else "h100-80gb"


def save_state(ctx: JobContext, outputs: dict[str, Any]) -> None:
    """Keep a stage's outputs in the job even when it then fails (the gate's verdict, say)."""
    ctx.state.update(outputs)
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        job.state = dict(ctx.state)


def save_outputs(ctx: JobContext, outputs: dict[str, Any]) -> None:
    """Store these outputs of a running stage now, and only these: what else the stage changed in
    its state (the held-out split train makes, say) is stored when the stage ends, so a takeover
    after a lost machine never reads a path of that machine as done."""
    ctx.state.update(outputs)
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        job.state = {**(job.state or {}), **outputs}
