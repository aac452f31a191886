"""Worker pools per compute class (issue 17): where a job is sent, what it is told when no worker
of its class is live, and the operator's view of each pool (queue depth, live workers).

The routing rule itself is the plan's (services/plans.py `_route`: the class named, else the
cheapest pool the job fits); the queue name of a class is infra/queue.py `queue_for`; which of a
routed job's stages run from the CPU queue instead is `queue_for_stage` here."""

from __future__ import annotations

import logging
from typing import Any

from domain.job_config import JobConfig
from domain.lists import ACCELERATOR_STAGES, GPUS_PER_JOB, STAGES
from infra import queue
from infra.db import session_scope
from infra.models import Job
from infra.settings import get_settings
from services.errors import InvalidRequest
from services.schemas.plans import PlanPublic
from services.schemas.pools import PoolPublic, PoolsPublic

log = logging.getLogger(__name__)
# How long the API waits for workers to answer "which queues do you consume" (Celery's remote
# control) when a job is queued: a create takes this much longer, only with pools.
LIVE_WORKERS_TIMEOUT_S = 0.5


def require_fit(plan: PlanPublic, named: str | None) -> None:
    """With pools, a job that fits none of them (or not the class it names) would wait forever:
    refused at create. With one queue the plan's fit stays advice, as it always was."""
    if get_settings().pool_classes and not plan.fits:
        raise InvalidRequest(
            f"this job fits no pool of this deployment: {plan.no_fit_reason}",
            param="compute_class" if named else "model",
            code="no_compute_fits",
        )


def queue_for_stage(job_queue: str | None, stage: str, synthesizes: bool) -> str:
    """The queue a job's `stage` runs from, for a job routed to `job_queue` (None: settings.queue).
    With pools, a GPU job's stages that need no accelerator (domain/lists.py ACCELERATOR_STAGES
    says which and why) go to the CPU queue. The stages before training (prepare, synthesize) go
    there only when the job synthesizes; else they take seconds and run beside the training.
    Without pools, or for a CPU job: its own queue."""
    s = get_settings()
    routed = job_queue or s.queue
    if not s.pool_classes or not s.cpu_stages_on_cpu_workers or routed == s.queue:
        return routed
    before_training = STAGES.index(stage) < STAGES.index("train")  # type: ignore[arg-type]
    on_class = stage in ACCELERATOR_STAGES or (before_training and not synthesizes)
    return routed if on_class else s.queue


def queue_now(job: Job) -> str:
    """The queue of the job's next stage: its pool's, or with pools the CPU queue for a stage that
    needs no accelerator (services/pools.py queue_for_stage)."""
    done = set(job.stages_done or [])
    stage = next((name for name in STAGES if name not in done), STAGES[-1])
    if "train" in done and not (job.state or {}).get("handoff_stored"):
        # trained, but its machine was lost before the model was stored for a hand-over: the
        # stages after it need the weights, which only training again (from the last stored
        # checkpoint) on the job's class can make
        stage = "train"
    return queue_for_stage(job.queue, stage, JobConfig.model_validate(job.config).synthesizes)


def send_job(job_id: str) -> None:
    """Send a job's queue message to the queue of its next stage (the reaper's resend too)."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        name = queue_now(job) if job is not None else None
    queue.send(queue.RUN_JOB, job_id, name)


def waiting_note(queue_name: str) -> str | None:
    """A line for the job's events when no live worker consumes its queue, so it does not wait
    silently (with autoscaling from zero one may be starting). None with one queue, when one is
    live, or when the broker cannot say (the embedded SQLite broker)."""
    if not get_settings().pool_classes:
        return None
    try:
        live = queue.live_workers(LIVE_WORKERS_TIMEOUT_S)
    except Exception as exc:  # the job is queued; the note is advice, never a reason to fail it
        log.warning("could not ask the workers which queues they consume: %r", exc)
        return None
    if live is None or any(queue_name in queues for queues in live.values()):
        return None
    return (
        f"No live worker consumes queue {queue_name!r} now; the job waits there until a worker of "
        "its class starts (or an autoscaler starts one)"
    )


def pools_status() -> PoolsPublic:
    """Each pool's queue, its depth and the live workers consuming it, plus the CPU queue. A GPU
    class's multi-GPU queues (`<queue>.<class>.x<N>`) are listed when a job waits there or a worker
    consumes one, so the view stays one line per class on a fleet that has none."""
    s = get_settings()
    classes = s.pool_classes or [s.worker_compute]
    live = queue.live_workers()
    rows: dict[str, dict[str, Any]] = {}
    for compute, gpus in _pool_queues(classes, s.max_gpus_per_job):
        name = queue.queue_for(compute, gpus)
        if name not in rows:
            rows[name] = {"queue": name, "compute": [], "gpus": gpus, "depth": queue.queue_depth(name)}
        if compute not in rows[name]["compute"]:
            rows[name]["compute"].append(compute)
    pools = [
        PoolPublic(
            **row,
            live_workers=None if live is None else sorted(w for w, qs in live.items() if row["queue"] in qs),
        )
        for row in rows.values()
    ]
    pools = [p for p in pools if p.gpus == 1 or p.depth or p.live_workers]
    return PoolsPublic(routing="per_class" if s.pool_classes else "one_queue", data=pools)


def _pool_queues(classes: list[str], max_gpus: int) -> list[tuple[str, int]]:
    """(class, GPUs per job) of every queue a job can be routed to: the CPU queue, each class's
    one-GPU queue, and its N-GPU ones up to the deployment's cap (services/plans.py `_memory`)."""
    gpu_classes = [c for c in classes if c != "cpu"]
    many = [(c, n) for c in gpu_classes for n in GPUS_PER_JOB if n <= max_gpus]
    return [("cpu", 1), *((c, 1) for c in classes), *many]
