"""Fine-tune jobs: the one place their rules live. REST routes, the Celery worker and the CLI all
call these functions."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.job_config import JobConfig
from infra import queue
from infra.models import Checkpoint, Job, JobEvent, Org, UsageRecord, now
from infra.settings import get_settings
from services import limits, pools, spend_budgets
from services.errors import Conflict, NotFound, ServiceUnavailable
from services.ledger import append_usage, usage_key
from services.pagination import page
from services.plans import plan_job
from services.run_lifecycle import cancel_run
from services.schemas.jobs import JobError, JobPublic

log = logging.getLogger(__name__)
QUEUE_DOWN = (
    "the job queue is unavailable, so nothing was created or stored; retry the same request later "
    "(with the same Idempotency-Key, if you sent one)"
)


def to_public(job: Job) -> JobPublic:
    cfg = JobConfig.model_validate(job.config)
    hp = job.hyperparameters or cfg.method.hyperparameters.model_dump()
    return JobPublic(
        id=job.id,
        created_at=job.created_at,
        finished_at=job.finished_at,
        model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        organization_id=job.org_id,
        status=job.status,  # type: ignore[arg-type]
        error=JobError.model_validate(job.error) if job.error else None,
        hyperparameters=hp,
        method=cfg.method.model_dump(exclude_none=True),
        training_type=cfg.training_type,
        training_file=cfg.training_file,
        validation_file=cfg.validation_file,
        result_files=job.result_files,
        trained_tokens=job.trained_tokens,
        seed=cfg.seed,
        suffix=cfg.suffix,
        metadata=cfg.metadata,
        task=cfg.task.model_dump() if cfg.task else None,
        targets=[t if isinstance(t, str) else t.model_dump() for t in cfg.targets],
        lora=cfg.lora.model_dump(),
        gate=cfg.gate.model_dump(),
        eval_gate=(job.state or {}).get("gate"),
        stage=job.stage,
        total_cost_usd=round(job.total_cost_usd, 6),
    )


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(JobEvent(job_id=job_id, message=message, level=level, type=type, data=data))


def create_job(
    *, session: Session, org: Org, config: JobConfig, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Validate and add a job; returns (job, created). The same idempotency key returns the same job.

    A created job is flushed, not committed: `enqueue` commits it once its queue message is sent,
    so a job that could not be queued is never stored (see `submit_job`)."""
    if idempotency_key:
        existing = session.scalar(
            select(Job).where(Job.org_id == org.id, Job.idempotency_key == idempotency_key)
        )
        if existing is not None:
            if existing.config != config.model_dump(mode="json"):
                # Stripe's rule: a key names one request; reusing it for another is a client bug.
                raise Conflict(
                    "this Idempotency-Key was already used with a different request body",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            return existing, False
    limits.check_active_jobs(session, org)  # after the key: a replay is answered even at the cap
    # The plan validates the config (files, base, targets, LoRA targets) and prices it; a quote
    # over the job's cap or the org's remaining budget is refused before anything is stored.
    plan = plan_job(session=session, org=org, config=config)
    pools.require_fit(plan, config.compute_class)
    spend_budgets.enforce(plan.budget)
    job = Job(
        org_id=org.id,
        status="validating_files",
        config=config.model_dump(mode="json"),
        model=config.model,
        idempotency_key=idempotency_key,
        stages_done=[],
        # the GPUs of one node the job trains on (plan.gpus; the worker launches that many processes)
        state={"gpus": plan.gpus} if plan.gpus > 1 else {},
        result_files=[],
        quote_usd=plan.quote.total_usd,
        enqueued_at=now(),
        queue=plan.queue,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request with the same key won the race
        session.rollback()
        existing = session.scalar(
            select(Job).where(Job.org_id == org.id, Job.idempotency_key == idempotency_key)
        )
        if existing is None:
            raise
        return existing, False
    add_event(session, job.id, f"Created fine-tuning job: {job.id}")
    add_event(
        session,
        job.id,
        f"Validated training files; quoted ${plan.quote.total_usd:.4f} for "
        f"{plan.tokens.train_tokens_per_epoch * plan.hyperparameters.n_epochs:,} training tokens on "
        f"{plan.compute if plan.gpus == 1 else f'{plan.gpus} x {plan.compute}'}; job queued",
        data={
            "quote": plan.quote.model_dump(),
            "estimated_seconds": plan.estimated_seconds,
            "compute": plan.compute,
            "gpus": plan.gpus,
            "queue": plan.queue,
        },
    )
    job.status = "queued"
    return job, True


def enqueue(*, session: Session, job: Job) -> None:
    """Send the job's queue message, then commit the job that `create_job` added.

    The order is the point: with the broker down the transaction is rolled back, so nothing is
    stored under the Idempotency-Key and the same request succeeds once the queue is back. (A
    worker that receives the message before the commit lands waits for it: worker/tasks.py.) The
    broker's error names its address, so it is logged, never returned."""
    job_id, org_id = job.id, job.org_id
    try:
        first = pools.queue_now(job)  # a GPU job that synthesizes starts on the CPU queue
        queue.send(queue.RUN_JOB, job_id, first)
    except Exception as exc:
        session.rollback()
        log.warning("could not queue new job %s of org %s: %r", job_id, org_id, exc)
        raise ServiceUnavailable(
            QUEUE_DOWN, code="queue_unavailable", retry_after=get_settings().queue_retry_after_s
        ) from None
    note = pools.waiting_note(first)
    if note is not None:
        add_event(session, job_id, note, level="warn", data={"queue": first})
    session.commit()


def submit_job(
    *, session: Session, org: Org, config: JobConfig, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Create a job and hand it to the workers; a replayed idempotency key starts nothing new.
    The REST route and the agent tool both submit through here. With the queue down it raises
    ServiceUnavailable (503, Retry-After) and stores nothing."""
    job, created = create_job(session=session, org=org, config=config, idempotency_key=idempotency_key)
    if created:
        enqueue(session=session, job=job)
    return job, created


def get_job(*, session: Session, org: Org, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.org_id != org.id:
        raise NotFound(
            f"No such fine-tuning job: {job_id!r}", param="fine_tuning_job_id", code="job_not_found"
        )
    return job


def list_jobs(
    *, session: Session, org: Org, after: str | None, limit: int, metadata: dict[str, str] | None = None
) -> tuple[list[Job], bool]:
    after_row = get_job(session=session, org=org, job_id=after) if after else None
    rows, has_more = page(
        session, select(Job).where(Job.org_id == org.id), (Job.created_at, Job.id), after_row, limit
    )
    if metadata:  # metadata lives in the JSON config; filter the page (small by construction)
        rows = [
            j for j in rows if all((j.config.get("metadata") or {}).get(k) == v for k, v in metadata.items())
        ]
    return rows, has_more


def cancel_job(*, session: Session, org: Org, job_id: str) -> Job:
    """Cancel at once; a running worker sees the flag at its next step and publishes nothing."""
    job = get_job(session=session, org=org, job_id=job_id)
    cancel_run(job, what="job", param="fine_tuning_job_id", code="job_not_cancellable")
    add_event(session, job.id, "Job cancellation requested; the job is cancelled")
    session.commit()
    return job


def list_events(
    *, session: Session, org: Org, job_id: str, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    job = get_job(session=session, org=org, job_id=job_id)
    after_row = None
    if after:
        after_row = session.scalar(select(JobEvent).where(JobEvent.id == after, JobEvent.job_id == job.id))
        if after_row is None:
            raise NotFound(f"No such event: {after!r}", param="after")
    stmt = select(JobEvent).where(JobEvent.job_id == job.id)
    return page(session, stmt, (JobEvent.seq, JobEvent.seq), after_row, limit)


def list_checkpoints(
    *, session: Session, org: Org, job_id: str, after: str | None, limit: int
) -> tuple[list[Checkpoint], bool]:
    job = get_job(session=session, org=org, job_id=job_id)
    after_row = None
    if after:
        after_row = session.scalar(
            select(Checkpoint).where(Checkpoint.id == after, Checkpoint.job_id == job.id)
        )
        if after_row is None:
            raise NotFound(f"No such checkpoint: {after!r}", param="after")
    stmt = select(Checkpoint).where(Checkpoint.job_id == job.id)
    return page(session, stmt, (Checkpoint.step_number, Checkpoint.id), after_row, limit)


def record_usage(
    session: Session,
    job: Job,
    *,
    stage: str,
    unit: str,
    quantity: float,
    unit_price: float,
    idempotency_key: str | None = None,
) -> UsageRecord:
    """Append a ledger row from a measured quantity and keep the job's running total in step.

    Idempotent per (job, stage, unit), or per the key given: a retried stage gets the row its
    first run wrote, unchanged, and the job's total is not added to again.

    A job with budget_usd is never billed past it: the row is cut to what the cap leaves (the
    worker stops the job at the cap, so the cut is at most one stage's overshoot).
    """
    key = idempotency_key or usage_key(job.id, stage, unit)
    cap = (job.config or {}).get("budget_usd")
    if cap is not None and unit_price > 0:
        left = max(0.0, float(cap) - (job.total_cost_usd or 0.0))
        quantity = min(quantity, left / unit_price)
    row, inserted = append_usage(
        session,
        org_id=job.org_id,
        job_id=job.id,
        stage=stage,
        unit=unit,
        quantity=quantity,
        unit_price=unit_price,
        key=key,
    )
    if inserted:
        job.total_cost_usd = (job.total_cost_usd or 0.0) + row.amount_usd
    return row
