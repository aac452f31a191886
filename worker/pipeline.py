"""A fine-tune job, stage by stage, in domain/lists.py STAGES order: prepare → synthesize →
train → evaluate → export → gate → publish (worker/stages/<stage>.py each).

Each stage is idempotent and recorded in `jobs.stages_done` with its outputs in `jobs.state`, so a
job taken over after a lost worker skips what is done. Every status write is conditional on the
job still being `running`: a cancel that lands mid-stage always wins, and publishes nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from typing import Any

from sqlalchemy import update

from domain.job_config import JobConfig
from domain.lists import GPU_STAGES, LOCAL_OUTPUT_STAGES
from infra.db import session_scope
from infra.models import Job, now
from infra.price_book import price_book
from infra.queue import worker_queue
from infra.settings import get_settings
from services.errors import EdgetuneError
from services.jobs import add_event, record_usage
from worker.context import JobCancelled, JobContext, Stage, billing_compute
from worker.lifecycle import JOBS, Heartbeat, claim
from worker.stages import STAGES

log = logging.getLogger(__name__)


def _load(job_id: str) -> tuple[JobContext, list[str], int]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        ctx = JobContext(
            job.id,
            job.org_id,
            JobConfig.model_validate(job.config),
            get_settings().work_dir / job.id,
            dict(job.state or {}),
        )
        return ctx, list(job.stages_done or []), job.attempts


def _set_stage(ctx: JobContext, name: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == ctx.job_id, Job.status == "running").values(stage=name))
        add_event(session, ctx.job_id, f"Stage {name} started", data={"stage": name})


def _finish_stage(ctx: JobContext, name: str, outputs: dict[str, Any], seconds: float) -> None:
    """Record a stage's outputs, its place in stages_done and its measured compute cost, together."""
    ctx.state.update(outputs)
    gpu = bool(ctx.state.get("device") == "cuda") and name in GPU_STAGES
    compute = billing_compute(gpu)
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        job.state = dict(ctx.state)
        job.stages_done = [*(s for s in job.stages_done or [] if s != name), name]  # once, after a re-run
        record_usage(
            session,
            job,
            stage=name,
            unit=f"{compute}_second",
            quantity=seconds * ctx.gpus_held(name),  # GPU seconds: wall seconds x the GPUs held
            unit_price=price_book().compute_rate(compute),
        )
        add_event(
            session,
            ctx.job_id,
            f"Stage {name} finished in {seconds:.1f}s",
            data={"stage": name, "seconds": round(seconds, 3)},
        )


def _end(job_id: str, status: str, error: dict[str, Any] | None, message: str, level: str) -> None:
    with session_scope() as session:
        values: dict[str, Any] = {"status": status, "finished_at": now(), "stage": None}
        if error:
            values["error"] = error
        result = session.execute(
            update(Job).where(Job.id == job_id, Job.status == "running").values(**values)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            add_event(session, job_id, message, level=level)


def _after_machine_loss(ctx: JobContext, done: list[str]) -> list[str]:
    """A takeover on a machine without the job's work dir: the stages that left only local files
    run again. It costs little: prepare re-downloads, synthesize re-reads its stored files, train
    resumes from the last checkpoint in the artifact store, and the ledger's per-stage keys keep
    any of them from being billed twice."""
    rerun = [name for name in done if name in LOCAL_OUTPUT_STAGES]
    if rerun:
        ctx.event(
            f"This machine has none of the job's files: re-running {', '.join(rerun)} from stored state",
            level="warn",
            data={"rerun_stages": rerun},
        )
    return [name for name in done if name not in LOCAL_OUTPUT_STAGES]


def run_job(job_id: str, stages: list[tuple[str, Stage]] | None = None) -> None:
    if not claim(JOBS, job_id):
        log.info("job %s is finished, cancelled or held by a live worker; skipping", job_id)
        return
    ctx, done, attempt = _load(job_id)
    if done and not ctx.work_dir.exists():
        done = _after_machine_loss(ctx, done)
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    host, compute = socket.gethostname(), get_settings().worker_compute
    ctx.event(
        f"Job running on {host}, a {compute} worker (attempt {attempt})"
        + (f"; resuming after {done[-1]}" if done else ""),
        data={
            "worker": host,
            "pid": os.getpid(),
            "compute": compute,
            "queue": worker_queue(),
            "attempt": attempt,
        },
    )
    with Heartbeat(JOBS, job_id):
        try:
            for name, stage in stages or STAGES:
                if name in done:
                    continue
                ctx.check_cancel()
                ctx.check_budget()
                ctx.state["stage_name"] = name
                _set_stage(ctx, name)
                t0 = time.monotonic()
                outputs = stage(ctx)
                _finish_stage(ctx, name, outputs, time.monotonic() - t0)
            ctx.check_cancel()
            _end(job_id, "succeeded", None, "The job has successfully completed", "info")
        except JobCancelled:
            _end(job_id, "cancelled", None, "Job cancelled", "warn")
            ctx.event(
                f"Worker stopped the job at stage {ctx.state.get('stage_name', 'start')} after cancellation; "
                "nothing was published",
                level="warn",
            )
        except EdgetuneError as exc:  # the customer's input was at fault: say which part
            _end(
                job_id,
                "failed",
                {"code": exc.code or "invalid_input", "message": exc.message, "param": exc.param},
                f"Job failed: {exc.message}",
                "error",
            )
        except Exception as exc:
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            msg = f"{type(exc).__name__}: {exc}"[:2000]
            _end(
                job_id,
                "failed",
                {"code": "internal_error", "message": msg, "param": None},
                f"Job failed: {msg}",
                "error",
            )
