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
from pathlib import Path
from typing import Any

from sqlalchemy import update

from domain.job_config import JobConfig
from domain.lists import ACCELERATOR_STAGES, GPU_STAGES, LOCAL_OUTPUT_STAGES, TERMINAL
from infra.db import session_scope
from infra.models import Job, now
from infra.price_book import price_book
from infra.queue import worker_queue
from infra.settings import get_settings
from services.errors import EdgetuneError
from services.jobs import add_event, record_usage
from services.pools import queue_for_stage
from worker import handoff, machine
from worker.context import JobCancelled, JobContext, Stage, billing_compute, save_state
from worker.lifecycle import JOBS, Heartbeat, claim
from worker.stages import STAGES

log = logging.getLogger(__name__)
# A job moves at most twice when all goes well (CPU -> GPU -> CPU), once more after each lost
# machine; past this many, the workers disagree on where stages run, and the stage runs where it is.
MAX_HANDOFFS = 6


def _load(job_id: str) -> tuple[JobContext, list[str], int, str | None]:
    """The job's context, the stages done, its attempt and the queue it was routed to."""
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
        return ctx, list(job.stages_done or []), job.attempts, job.queue


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
            data={"stage": name, "seconds": round(seconds, 3), "compute": get_settings().worker_compute},
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


def _files_missing(ctx: JobContext) -> bool:
    """Whether the files the stages done left locally are not on this machine: a takeover after
    a lost machine, or a hand-over from another pool (worker/handoff.py)."""
    if not ctx.work_dir.exists():
        return True
    exported = [f for entry in (ctx.state.get("exported") or {}).values() for f in entry.get("files", [])]
    keys = ("train_path", "eval_path", "merged_dir", "adapter_dir", "base_model_dir")
    others = [
        m.get(k)
        for m in (ctx.state.get("other_bases") or {}).values()
        for k in ("merged_dir", "base_model_dir")
    ]
    return any(not Path(p).exists() for p in [*(ctx.state.get(k) for k in keys), *others, *exported] if p)


def _after_machine_loss(ctx: JobContext, done: list[str]) -> tuple[list[str], list[str]]:
    """A job on a machine without its files: the stages that left only local files run again, in
    place. It costs little: prepare re-downloads, synthesize re-reads its stored files, train's
    outputs are fetched when a hand-over stored them (else it resumes from the last checkpoint in
    the artifact store), and the ledger's per-stage keys keep any of them from being billed twice.
    Returns the stages still counted done and those to re-run."""
    stored = bool(ctx.state.get("handoff_stored"))
    rerun: list[str] = [n for n in done if n in LOCAL_OUTPUT_STAGES and not (n == "train" and stored)]
    if "train" in rerun and not ctx.config.validation_file and not ctx.config.synthesizes:
        ctx.state.pop("eval_path", None)  # the held-out split was a file of the lost machine
    if rerun:
        planned = bool(ctx.state.get("handoffs"))
        ctx.event(
            f"This machine has none of the job's files: re-running {', '.join(rerun)} from stored state",
            level="info" if planned else "warn",
            data={"rerun_stages": rerun},
        )
    return [n for n in done if n not in rerun], rerun


def _hand_off_if_elsewhere(ctx: JobContext, name: str, routed: str | None, rerun: list[str]) -> bool:
    """Whether the stage belongs to another pool's queue (services/pools.py queue_for_stage), in which
    case the job was handed there (worker/handoff.py). Stages re-run to restore files stay here,
    but for training, which only the job's class may run."""
    target = queue_for_stage(routed, name, ctx.config.synthesizes)
    if (name in rerun and name not in ACCELERATOR_STAGES) or target == worker_queue():
        return False
    if int(ctx.state.get("handoffs", 0)) >= MAX_HANDOFFS:  # workers that disagree on the rule
        ctx.event(
            f"Handed over {MAX_HANDOFFS} times already (do the workers share EDGETUNE_COMPUTE_POOLS and "
            f"EDGETUNE_CPU_STAGES_ON_CPU_WORKERS?); running stage {name} here",
            level="warn",
            data={"stage": name, "queue": target},
        )
        return False
    try:
        moved = handoff.hand_off(ctx, name, target)
    except Exception as exc:  # the store or database refused, before the job moved: run it here
        log.warning("job %s: hand-over to %s failed: %r", ctx.job_id, target, exc)
        ctx.event(
            f"Could not hand stage {name} to queue {target!r} ({type(exc).__name__}); running it here",
            level="warn",
            data={"stage": name, "queue": target},
        )
        return False
    if not moved:  # no longer running: cancelled meanwhile
        raise JobCancelled()
    return True


def run_job(job_id: str, stages: list[tuple[str, Stage]] | None = None) -> None:
    if not claim(JOBS, job_id):
        log.info("job %s is finished, cancelled or held by a live worker; skipping", job_id)
        _discard_if_ended(job_id)
        return
    ctx, done, attempt, routed = _load(job_id)
    # this machine's, whichever ran the stages before; saved, as the training process reads it
    save_state(ctx, {"device": machine.device()})
    rerun: list[str] = []
    if done and _files_missing(ctx):
        done, rerun = _after_machine_loss(ctx, done)
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    _running_event(ctx, done, attempt)
    with Heartbeat(JOBS, job_id):
        try:
            for name, stage in stages or STAGES:
                if name in done:
                    if name == "train" and rerun:  # after the re-runs, so their paths are replaced
                        handoff.restore_trained(ctx)
                    continue
                ctx.check_cancel()
                if _hand_off_if_elsewhere(ctx, name, routed, rerun):
                    return
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
    handoff.discard_trained(ctx)  # the job ended here: its hand-over copy is no longer needed


def _discard_if_ended(job_id: str) -> None:
    """A job cancelled while handed over between pools never runs again: the message that would
    have run it deletes its stored copy of the trained model instead."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        ended = job is not None and job.status in TERMINAL and (job.state or {}).get("handoff_stored")
    if ended:
        handoff.discard_trained(_load(job_id)[0])


def _running_event(ctx: JobContext, done: list[str], attempt: int) -> None:
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
