from __future__ import annotations

import logging
import threading
import time
from typing import Any

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


# How long a worker waits for the job of a message it took to be committed.
COMMIT_WAIT_S = 10.0


@celery_app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> None:
    if not _job_appears(job_id, COMMIT_WAIT_S):
        log.warning("job %s was never stored (its create failed after sending): message dropped", job_id)
        return
    run_pipeline(job_id)


def _job_appears(job_id: str, within_s: float) -> bool:
    """The API sends a job's message just before it commits the job, so that a queue outage stores
    nothing (services/jobs.py enqueue): a worker quicker than that commit waits for it here, holding
    the message. Not `self.retry(countdown=...)`: a retry is a new message with an ETA, and a
    worker holds ETA messages beyond its prefetch of one, so one worker collected the retried
    messages of two jobs created at once and ran them one after the other while another worker
    of the pool sat idle (bench/fleet_throughput.py, 2 workers, 2 jobs)."""
    deadline = time.monotonic() + within_s
    while not _job_exists(job_id):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


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
