"""The Celery app. Job state lives in the database, not in Celery's result backend, so no result
backend is configured; the broker defaults to kombu's SQLAlchemy transport on SQLite (no server)."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from infra.settings import get_settings

EIGHT_HOURS = 8 * 3600


def make_celery() -> Celery:
    s = get_settings()
    app = Celery(
        "edgetune",
        broker=s.resolved_broker_url,
        include=["worker.tasks", "worker.billing_tasks", "worker.synth_tasks"],
    )
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
            "task": "edgetune.billing_push",
            "schedule": s.billing_push_interval_s,
            "options": {"expires": s.billing_push_interval_s},
        }
    }
    app.conf.beat_schedule_filename = str((s.var_dir / "celerybeat-schedule").resolve())
    if s.resolved_broker_url.startswith("redis"):
        # Redis redelivers unacked messages after the visibility timeout; it must exceed the longest
        # job. The heartbeat reaper (worker/recovery.py) resumes lost jobs much sooner than that.
        app.conf.broker_transport_options = {"visibility_timeout": EIGHT_HOURS}
    else:
        # kombu's SQLAlchemy transport passes its options to create_engine: set none there.
        app.conf.broker_transport_options = {}
    return app


celery_app = make_celery()


@lru_cache
def celery_client() -> Celery:
    """The producer side (API, recovery): built on first use so it reads the current settings."""
    return make_celery()
