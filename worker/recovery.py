"""No job (and no synthetic dataset) stays `running` forever: a job whose worker stopped
heart-beating is resumed from its last completed stage (and the trainer from its last checkpoint),
a dataset is run again from its seed, and either is failed once attempts run out.

Nor `queued` forever: one whose queue message was sent EDGETUNE_JOB_REQUEUE_AFTER_S ago and that no
worker has taken lost its message (a Redis without persistence, a failover) and is sent again, once
per lost message however many reapers run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.services.jobs import add_event
from core.services.synthetic_datasets import fail_dataset
from infra.db import session_scope
from infra.models import Job, SyntheticDataset, now
from infra.settings import get_settings

log = logging.getLogger(__name__)


def recover_stale_jobs(enqueue: Callable[[str], object]) -> list[str]:
    s = get_settings()
    cutoff = now() - int(s.job_stale_after_s)
    requeued: list[str] = []
    with session_scope() as session:
        stale = session.scalars(select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)).all()
        for job in stale:
            if job.attempts >= s.job_max_attempts:
                job.status, job.finished_at = "failed", now()
                job.error = {
                    "code": "worker_lost",
                    "param": None,
                    "message": f"the worker running this job was lost {job.attempts} times",
                }
                add_event(session, job.id, job.error["message"], level="error")
                continue
            add_event(
                session,
                job.id,
                f"Worker lost during stage '{job.stage}'; resuming on another worker",
                level="warn",
                data={"stage": job.stage, "attempt": job.attempts + 1},
            )
            requeued.append(job.id)
    for job_id in requeued:
        enqueue(job_id)
    return requeued


def recover_stale_datasets(enqueue: Callable[[str], object]) -> list[str]:
    """The same rule for synthetic datasets: re-queued (the claim takes a stale row) or failed."""
    s = get_settings()
    cutoff = now() - int(s.job_stale_after_s)
    requeued: list[str] = []
    with session_scope() as session:
        stale = session.scalars(
            select(SyntheticDataset).where(
                SyntheticDataset.status == "running", SyntheticDataset.heartbeat_at < cutoff
            )
        ).all()
        for ds in stale:
            if ds.attempts >= s.job_max_attempts:
                lost = f"the worker running this dataset was lost {ds.attempts} times"
                fail_dataset(session, ds, "worker_lost", lost)
            else:
                requeued.append(ds.id)
    for ds_id in requeued:
        enqueue(ds_id)
    return requeued


def requeue_lost_jobs(enqueue: Callable[[str], object]) -> list[str]:
    """Send a queued job whose message was lost again, with an event saying so."""

    def note(session: Session, job_id: str) -> None:
        add_event(session, job_id, "The job's queue message was lost; queued it again", level="warn")

    return _requeue_lost(Job, enqueue, note)


def requeue_lost_datasets(enqueue: Callable[[str], object]) -> list[str]:
    return _requeue_lost(SyntheticDataset, enqueue)


def _requeue_lost(
    model: Any, enqueue: Callable[[str], object], note: Callable[[Session, str], None] | None = None
) -> list[str]:
    cutoff = now() - int(get_settings().job_requeue_after_s)
    # Rows queued before enqueued_at existed fall back to their creation time.
    lost = (model.status == "queued") & (func.coalesce(model.enqueued_at, model.created_at) < cutoff)
    with session_scope() as session:
        candidates = session.scalars(select(model.id).where(lost).order_by(model.created_at).limit(100)).all()
    requeued: list[str] = []
    for row_id in candidates:
        with session_scope() as session:
            # Exactly once: this UPDATE locks the row, a concurrent reaper's UPDATE waits for that
            # lock and then finds enqueued_at fresh, matching nothing. The message is sent inside
            # the transaction, so a broker error rolls the stamp back and the next pass retries.
            taken = session.execute(update(model).where(model.id == row_id, lost).values(enqueued_at=now()))
            if not taken.rowcount:  # type: ignore[attr-defined]
                continue  # taken by a worker, cancelled, or requeued by another reaper meanwhile
            if note is not None:
                note(session, row_id)
            enqueue(row_id)
        requeued.append(row_id)
    if requeued:
        log.warning("requeued %d %s whose queue message was lost", len(requeued), model.__tablename__)
    return requeued


def start_reaper(
    stop: threading.Event, enqueue: Callable[[str], object], enqueue_dataset: Callable[[str], object]
) -> threading.Thread:
    interval = max(get_settings().job_stale_after_s / 2, 1.0)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                recover_stale_jobs(enqueue)
                recover_stale_datasets(enqueue_dataset)
                requeue_lost_jobs(enqueue)
                requeue_lost_datasets(enqueue_dataset)
            except Exception:  # the reaper must outlive a transient database error
                log.exception("stale-job recovery failed")

    thread = threading.Thread(target=loop, name="edgetune-reaper", daemon=True)
    thread.start()
    return thread
