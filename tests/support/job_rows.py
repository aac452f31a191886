"""Jobs, job events and synthetic datasets written straight to the database, as a worker leaves
them, for tests of what reads them live (the event streams, the CLI's wait): no training, no queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from infra.db import session_scope
from infra.models import Job, JobEvent, SyntheticDataset, now
from tests.support.ledger import org_of

JOB_CONFIG = {"model": "test/tiny-lfm2", "training_file": "file-x"}
TASK = {"type": "classification", "description": "Classify reviews.", "labels": ["positive", "negative"]}


def new_job(api_key: str, status: str = "running") -> str:
    with session_scope() as session:
        job = Job(org_id=org_of(api_key), status=status, config=JOB_CONFIG, model=JOB_CONFIG["model"])
        session.add(job)
        session.flush()
        return job.id


def add_event(job_id: str, message: str, **data: Any) -> str:
    """One committed event of the job; returns its id."""
    with session_scope() as session:
        event = JobEvent(job_id=job_id, message=message, data=data or None)
        session.add(event)
        session.flush()
        return event.id


def end_job(job_id: str, status: str = "succeeded") -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status, finished_at=now()))


def new_dataset(api_key: str, status: str = "queued", **progress: Any) -> str:
    with session_scope() as session:
        ds = SyntheticDataset(
            org_id=org_of(api_key),
            status=status,
            task=TASK,
            teacher={},
            seed=42,
            progress={"phase": "queued", "kept": 0, "wanted": 10} | progress,
        )
        session.add(ds)
        session.flush()
        return ds.id


def set_dataset(dataset_id: str, status: str, **progress: Any) -> None:
    with session_scope() as session:
        ds = session.get(SyntheticDataset, dataset_id)
        assert ds is not None
        ds.status, ds.progress = status, {**ds.progress, **progress}
        if status in ("succeeded", "failed", "cancelled"):
            ds.finished_at = now()
