from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutting_down

from worker.celery_app import celery_app
from worker.pipeline import run_job as run_pipeline
from worker.recovery import recover_stale_jobs, start_reaper

log = logging.getLogger(__name__)
_stop = threading.Event()


@celery_app.task(name="edgetune.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> None:
    run_pipeline(job_id)


@worker_ready.connect
def _on_ready(**_: Any) -> None:
    # A worker that starts after another one was killed picks up the orphaned jobs at once.
    recover_stale_jobs(enqueue=lambda job_id: run_job.delay(job_id))
    start_reaper(_stop, enqueue=lambda job_id: run_job.delay(job_id))


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    _stop.set()
