"""The job queue, as the services see it: three task names and `send`.

Services hand work to the workers through here and never import the worker package; the worker
builds its consuming app from the same `make_celery` (worker/celery_app.py), so producer and
consumer share one broker configuration. Job state lives in the database, not in Celery's result
backend, so no result backend is configured; the broker defaults to kombu's SQLAlchemy transport
on SQLite (no server)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from celery import Celery

from infra.settings import get_settings

RUN_JOB = "edgetune.run_job"
RUN_SYNTHETIC_DATASET = "edgetune.run_synthetic_dataset"
BILLING_PUSH = "edgetune.billing_push"

EIGHT_HOURS = 8 * 3600


def make_celery(include: Sequence[str] = ()) -> Celery:
    """A Celery app on the configured broker; the worker passes the modules holding its tasks."""
    s = get_settings()
    app = Celery("edgetune", broker=s.resolved_broker_url, include=list(include))
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,  # redeliver a job whose worker died mid-run ...
        task_reject_on_worker_lost=True,  # ... even when the child was SIGKILLed
        worker_prefetch_multiplier=1,  # jobs are long: reserve one message per process
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue=s.queue,
    )
    # Celery beat (`edgetune worker --beat`, or `celery -A worker.celery_app beat`) pushes pending
    # usage to the billing provider; a push that waited longer than one period is dropped, as the
    # next one sends the same rows.
    app.conf.beat_schedule = {
        "billing-push": {
            "task": BILLING_PUSH,
            "schedule": s.billing_push_interval_s,
            "options": {"expires": s.billing_push_interval_s},
        }
    }
    app.conf.beat_schedule_filename = str((s.var_dir / "celerybeat-schedule").resolve())
    if s.resolved_broker_url.startswith("redis"):
        # Redis redelivers unacked messages after the visibility timeout; it must exceed the longest
        # job. The heartbeat reaper (worker/lifecycle.py) resumes lost jobs much sooner than that.
        app.conf.broker_transport_options = {"visibility_timeout": EIGHT_HOURS}
    else:
        # kombu's SQLAlchemy transport passes its options to create_engine: set none there.
        app.conf.broker_transport_options = {}
    return app


@lru_cache
def producer() -> Celery:
    """The producer side (services, the worker's reaper): built on first use so it reads the
    current settings."""
    return make_celery()


def send(task: str, item_id: str) -> None:
    """Queue one job or dataset by id. Raises whatever the broker raises when it is unreachable."""
    producer().send_task(task, args=[item_id])
