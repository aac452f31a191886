"""The trainer's window on the job: progress events, checkpoint rows, cooperative cancel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from infra.db import session_scope
from infra.models import Checkpoint, Job
from services.errors import BudgetExhausted
from worker import checkpoint_store
from worker.context import JobContext


class JobTrainerCallback(TrainerCallback):
    """Reports steps (metrics events) and checkpoints (rows, stored copies). With `watch_stop` it
    also stops the trainer at the next step on a cancel or an exhausted budget; the train stage
    runs recipes in a child process it ends itself (worker/train_process.py) and passes False."""

    def __init__(self, ctx: JobContext, *, watch_stop: bool = True, other_base: str | None = None) -> None:
        self.ctx = ctx
        self.watch_stop = watch_stop
        # a sweep's other base (worker/stages/train.py): its events name it, and its checkpoints
        # stay on this machine (the job's checkpoint rows and stored copies are its model's)
        self.other_base = other_base
        self._prefix = f"{other_base}: " if other_base else ""
        self.stopped_for_cancel = False
        self.budget_error: BudgetExhausted | None = None
        self._started = self._budget_checked = time.monotonic()
        self._t0 = time.monotonic()
        self._last_tokens = 0.0
        self._last_loss: float | None = None

    def _model(self) -> dict[str, Any]:
        return {"model": self.other_base} if self.other_base else {}

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step > 0:  # the trainer loaded a checkpoint before calling us
            self.ctx.event(
                f"{self._prefix}Resumed training from the checkpoint at step {state.global_step}",
                type="metrics",
                data={"resumed_from_step": state.global_step, "total_steps": state.max_steps} | self._model(),
            )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.watch_stop:
            return
        if self.ctx.cancelled():  # at most one database read per second
            self.stopped_for_cancel = True
            control.should_training_stop = True
        elif self.ctx.config.budget_usd is not None and time.monotonic() - self._budget_checked >= 1.0:
            self._budget_checked = time.monotonic()
            running = (self._budget_checked - self._started) * self.ctx.stage_rate_usd_per_s("train")
            try:
                self.ctx.check_budget(running)
            except BudgetExhausted as exc:
                self.budget_error = exc
                control.should_training_stop = True

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        tokens = float(state.num_input_tokens_seen or 0)
        self._last_loss = float(logs["loss"])
        data = {
            "step": state.global_step,
            "total_steps": state.max_steps,
            "train_loss": self._last_loss,
            "learning_rate": logs.get("learning_rate"),
            "epoch": round(state.epoch or 0.0, 3),
            "tokens_per_second": round((tokens - self._last_tokens) / elapsed, 1) if tokens else None,
        }
        self._t0, self._last_tokens = time.monotonic(), tokens
        self.ctx.event(
            f"{self._prefix}Step {state.global_step}/{state.max_steps}: training loss={self._last_loss:.4f}",
            type="metrics",
            data=data | self._model(),
        )

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.other_base:
            return
        step = state.global_step
        with session_scope() as session:
            job = session.get(Job, self.ctx.job_id)
            if job is None or session.query(Checkpoint).filter_by(job_id=job.id, step_number=step).first():
                return  # a resumed run re-saving a step it already recorded
            name = f"{job.fine_tuned_model or 'ft:' + job.model}:ckpt-step-{step}"
        # The trainer calls on_save once checkpoint-<step>/ is complete on disk. Store it before
        # the row exists, so every listed checkpoint can be resumed from on another machine.
        checkpoint_store.upload(
            self.ctx.org_id, self.ctx.job_id, Path(str(args.output_dir)) / f"checkpoint-{step}", step
        )
        with session_scope() as session:
            session.add(
                Checkpoint(
                    job_id=self.ctx.job_id,
                    step_number=step,
                    fine_tuned_model_checkpoint=name,
                    metrics={"step": step, "train_loss": self._last_loss},
                )
            )
            steps = list(
                session.scalars(select(Checkpoint.step_number).where(Checkpoint.job_id == self.ctx.job_id))
            )
        # the new row is in `steps` (autoflush); only the one checkpoint that just aged out goes
        checkpoint_store.prune(
            self.ctx.org_id, self.ctx.job_id, sorted(steps)[-(checkpoint_store.KEEP + 1) :]
        )
