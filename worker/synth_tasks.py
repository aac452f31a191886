"""The Celery task that runs one synthetic dataset (POST /v1/synthetic_datasets).

The synthesis itself is synth.generate.synthesize, the same call a fine-tune job's synthesize stage
makes; this module claims the row, keeps its progress current, turns a cancel into `should_stop`,
and stores the outcome through the service layer (services/synthetic_datasets.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import update

from domain.job_config import TaskSpec
from infra.db import session_scope
from infra.models import SyntheticDataset
from infra.queue import RUN_SYNTHETIC_DATASET
from services import synthetic_datasets as svc
from services.schemas.synthetic_datasets import TeacherOptions
from worker.celery_app import celery_app
from worker.lifecycle import DATASETS, Heartbeat, claim

log = logging.getLogger(__name__)
CANCEL_POLL_S = 0.5  # how stale a cancel may be when the next teacher request is due
PROGRESS_EVERY_S = 1.0


@celery_app.task(name=RUN_SYNTHETIC_DATASET, acks_late=True, reject_on_worker_lost=True)
def run_synthetic_dataset(dataset_id: str) -> None:
    if not claim(DATASETS, dataset_id):
        return  # cancelled before a worker took it, or already taken
    try:
        with Heartbeat(DATASETS, dataset_id):
            _run(dataset_id)
    except Exception as exc:
        log.exception("synthetic dataset %s failed", dataset_id)
        with session_scope() as session:
            ds = session.get(SyntheticDataset, dataset_id)
            if ds is not None:
                svc.fail_dataset(session, ds, _error_code(exc), str(exc) or type(exc).__name__)


def _run(dataset_id: str) -> None:
    from synth.generate import synthesize

    with session_scope() as session:
        ds = session.get(SyntheticDataset, dataset_id)
        assert ds is not None
        task, seed = TaskSpec.model_validate(ds.task), ds.seed
        options = TeacherOptions.model_validate(ds.teacher)
    watch = _Watch(dataset_id, task.num_examples)
    with svc.open_teacher(options) as client:
        result = synthesize(
            task, client, seed, should_stop=watch.cancelled, on_progress=watch.progress, on_round=watch.round
        )
    with session_scope() as session:
        ds = session.get(SyntheticDataset, dataset_id)
        assert ds is not None
        svc.finish_dataset(session, ds, result)


class _Watch:
    """Reads the cancel flag and writes progress, each at most every so often: synthesis polls
    `should_stop` before every teacher request, far more often than the database needs asking."""

    def __init__(self, dataset_id: str, wanted: int) -> None:
        self.dataset_id, self.wanted = dataset_id, wanted
        self._stopped = False
        self._rounds: list[dict[str, Any]] = []
        self._checked_at = self._written_at = 0.0

    def cancelled(self) -> bool:
        if self._stopped or time.monotonic() - self._checked_at < CANCEL_POLL_S:
            return self._stopped
        with session_scope() as session:
            ds = session.get(SyntheticDataset, self.dataset_id)
            self._stopped = ds is None or ds.cancel_requested or ds.status != "running"
        self._checked_at = time.monotonic()
        return self._stopped

    def progress(self, kept: int, wanted: int) -> None:
        if kept < wanted and time.monotonic() - self._written_at < PROGRESS_EVERY_S:
            return
        self._write({"phase": "generating", "kept": kept, "wanted": wanted, "rounds": self._rounds})
        self._written_at = time.monotonic()

    def round(self, summary: dict[str, Any]) -> None:
        """Every round, written at once: kept against asked, its top drop reasons (as a job's events)."""
        self._rounds.append(summary)
        self._write(
            {
                "phase": "generating",
                "kept": summary["kept_total"],
                "wanted": self.wanted,
                "rounds": self._rounds,
            }
        )

    def _write(self, progress: dict[str, Any]) -> None:
        with session_scope() as session:
            session.execute(
                update(SyntheticDataset)
                .where(SyntheticDataset.id == self.dataset_id, SyntheticDataset.status == "running")
                .values(progress=progress)
            )


def _error_code(exc: Exception) -> str:
    from synth.llama_server import TeacherServerError
    from synth.teacher import TeacherError

    if isinstance(exc, TeacherError):
        return "teacher_error"
    if isinstance(exc, TeacherServerError):
        return "teacher_unavailable"
    return "internal_error"
