from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task
from celery.signals import worker_ready, worker_shutting_down

from infra.db import session_scope
from infra.models import Job
from infra.queue import RUN_JOB
from services.pools import send_job
from worker.celery_app import celery_app
from worker.lifecycle import recover, start_reaper
from worker.pipeline import run_job as run_pipeline

log = logging.getLogger(__name__)
_stop = threading.Event()


@celery_app.task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=10)
def run_job(self: Task, job_id: str) -> None:
    if not _job_exists(job_id):
        # The API sends a job's message just before it commits the job, so that a queue outage
        # stores nothing (services/jobs.py enqueue): a worker quicker than that commit asks
        # again shortly. A job that never appears (its commit failed) is dropped after the retries.
        raise self.retry(countdown=0.5)
    run_pipeline(job_id)


def _job_exists(job_id: str) -> bool:
    with session_scope() as session:
        return session.get(Job, job_id) is not None


@worker_ready.connect
def _on_ready(**_: Any) -> None:
    # A worker that starts after another one was killed picks up the orphaned jobs at once.
    from worker.synth_tasks import run_synthetic_dataset

    def enqueue_job(job_id: str) -> object:
        send_job(job_id)  # to the pool the job was routed to, not this worker's queue
        return None

    def enqueue_dataset(ds_id: str) -> object:
        return run_synthetic_dataset.delay(ds_id)

    recover(enqueue_job, enqueue_dataset)
    start_reaper(_stop, enqueue_job, enqueue_dataset)


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    _stop.set()
