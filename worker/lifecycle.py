"""One run lifecycle for fine-tuning jobs and synthetic datasets: claim, heartbeat, recovery.

- **Claim**: a worker takes a row that is `queued`, or `running` with a stale heartbeat (its worker
  was lost), in one conditional UPDATE, so two workers never run the same row.
- **Heartbeat**: a running row's `heartbeat_at` is stamped from a thread of its own, so a long step
  in the work never looks like a lost worker.
- **Recovery**: no row stays `running` forever: one whose heartbeat stopped is sent again (a job
  resumes from its last completed stage and its trainer from its last checkpoint; a dataset runs
  again from its seed) and is failed once attempts run out. Nor `queued` forever: one whose queue
  message was sent EDGETUNE_JOB_REQUEUE_AFTER_S ago and that no worker has taken lost its message (a
  Redis without persistence, a failover) and is sent again, once per lost message however many
  reapers run.

A job and a dataset differ only in what they say when this happens: the `Kind` of each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from infra.db import session_scope
from infra.models import Job, SyntheticDataset, now
from infra.settings import get_settings
from services.jobs import add_event
from services.synthetic_datasets import fail_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """What differs between a job and a dataset in their lifecycle."""

    model: type[Job] | type[SyntheticDataset]
    noun: str
    # Values a claim writes besides status, attempts and heartbeat.
    on_claim: Callable[[], dict[str, Any]] = field(default=dict)
    # Called in the transaction that re-sends a running row whose worker was lost / fails it.
    on_resume: Callable[[Session, Any], None] | None = None
    on_give_up: Callable[[Session, Any, str], None] | None = None
    # Called in the transaction that re-sends a queued row whose message was lost.
    on_lost_message: Callable[[Session, str], None] | None = None


def _job_resumed(session: Session, job: Any) -> None:
    add_event(
        session,
        job.id,
        f"Worker lost during stage '{job.stage}'; resuming on another worker",
        level="warn",
        data={"stage": job.stage, "attempt": job.attempts + 1},
    )


def _job_given_up(session: Session, job: Any, message: str) -> None:
    from worker.handoff import discard_stored

    job.status, job.finished_at = "failed", now()
    job.error = {"code": "worker_lost", "param": None, "message": message}
    add_event(session, job.id, message, level="error")
    discard_stored(job.org_id, job.id, job.state)  # a hand-over's copy of the trained model


def _job_message_lost(session: Session, job_id: str) -> None:
    add_event(session, job_id, "The job's queue message was lost; queued it again", level="warn")


def _dataset_given_up(session: Session, ds: Any, message: str) -> None:
    fail_dataset(session, ds, "worker_lost", message)


JOBS = Kind(Job, "job", on_resume=_job_resumed, on_give_up=_job_given_up, on_lost_message=_job_message_lost)
# Synthesis is seeded, so a re-run asks the same questions, and nothing of a lost attempt was
# stored or billed: a dataset starts over from planning.
DATASETS = Kind(
    SyntheticDataset,
    "dataset",
    on_claim=lambda: {"started_at": now(), "progress": {"phase": "planning", "kept": 0}},
    on_give_up=_dataset_given_up,
)


def claim(kind: Kind, row_id: str) -> bool:
    """Atomically take a queued row, or a running one whose worker stopped heart-beating."""
    m = kind.model
    stale_before = now() - int(get_settings().job_stale_after_s)
    takeable = or_(
        m.status == "queued",
        (m.status == "running") & or_(m.heartbeat_at.is_(None), m.heartbeat_at < stale_before),
    )
    with session_scope() as session:
        result = session.execute(
            update(m)
            .where(m.id == row_id, takeable)
            .values(status="running", attempts=m.attempts + 1, heartbeat_at=now(), **kind.on_claim())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class Heartbeat:
    """Stamps `heartbeat_at` of a running row every EDGETUNE_JOB_HEARTBEAT_S from a thread."""

    def __init__(self, kind: Kind, row_id: str) -> None:
        self.kind, self.row_id, self.stop = kind, row_id, threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"heartbeat-{row_id}", daemon=True)

    def _loop(self) -> None:
        m = self.kind.model
        while not self.stop.wait(get_settings().job_heartbeat_s):
            try:
                with session_scope() as session:
                    session.execute(
                        update(m).where(m.id == self.row_id, m.status == "running").values(heartbeat_at=now())
                    )
            except Exception:
                log.exception("heartbeat failed for %s", self.row_id)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()


def recover_stale(kind: Kind, enqueue: Callable[[str], object]) -> list[str]:
    """Send again each running row whose heartbeat stopped, or fail it once attempts run out."""
    s = get_settings()
    m: Any = kind.model  # Job or SyntheticDataset: the same columns
    cutoff = now() - int(s.job_stale_after_s)
    requeued: list[str] = []
    with session_scope() as session:
        stale = session.scalars(select(m).where(m.status == "running", m.heartbeat_at < cutoff)).all()
        for row in stale:
            if row.attempts >= s.job_max_attempts:
                if kind.on_give_up is not None:
                    lost = f"the worker running this {kind.noun} was lost {row.attempts} times"
                    kind.on_give_up(session, row, lost)
                continue
            if kind.on_resume is not None:
                kind.on_resume(session, row)
            requeued.append(row.id)
    for row_id in requeued:
        enqueue(row_id)
    return requeued


def requeue_lost(kind: Kind, enqueue: Callable[[str], object]) -> list[str]:
    """Send again each queued row whose queue message was lost (see the module's docstring)."""
    model, note = kind.model, kind.on_lost_message
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


def requeue_lost_jobs(enqueue: Callable[[str], object]) -> list[str]:
    return requeue_lost(JOBS, enqueue)


def requeue_lost_datasets(enqueue: Callable[[str], object]) -> list[str]:
    return requeue_lost(DATASETS, enqueue)


def recover(enqueue_job: Callable[[str], object], enqueue_dataset: Callable[[str], object]) -> None:
    """One pass of every rule, over jobs and datasets."""
    for kind, enqueue in ((JOBS, enqueue_job), (DATASETS, enqueue_dataset)):
        recover_stale(kind, enqueue)
        requeue_lost(kind, enqueue)


def start_reaper(
    stop: threading.Event, enqueue_job: Callable[[str], object], enqueue_dataset: Callable[[str], object]
) -> threading.Thread:
    interval = max(get_settings().job_stale_after_s / 2, 1.0)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                recover(enqueue_job, enqueue_dataset)
            except Exception:  # the reaper must outlive a transient database error
                log.exception("stale-job recovery failed")

    thread = threading.Thread(target=loop, name="edgetune-reaper", daemon=True)
    thread.start()
    return thread
