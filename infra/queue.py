"""The job queue, as the services see it: three task names, `send`, and which queue a compute class
takes (`queue_for`), how deep each is and which workers consume it (for the operator).

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


def send(task: str, item_id: str, queue: str | None = None) -> None:
    """Queue one job or dataset by id, on `queue` (default: settings.queue). Raises whatever the
    broker raises when it is unreachable."""
    producer().send_task(task, args=[item_id], queue=queue or get_settings().queue)


def queue_for(compute: str, gpus: int = 1) -> str:
    """The queue of jobs that train on `compute` (a price-book class) with `gpus` GPUs of one node.
    Without pools every job shares settings.queue; with them a GPU class has its own,
    `<queue>.<class>` ("edgetune.l4-24gb"), and `<queue>.<class>.x<N>` for its N-GPU jobs, consumed
    by the workers holding N GPUs; CPU jobs share settings.queue with the CPU work (datasets, billing)."""
    s = get_settings()
    if not s.pool_classes or compute == "cpu":
        return s.queue
    return f"{s.queue}.{compute}" + (f".x{gpus}" if gpus > 1 else "")


def worker_queue() -> str:
    """The queue a worker consumes: its class's, for jobs of as many GPUs as it holds. A CPU
    worker's is settings.queue, which also holds the CPU work; a GPU worker takes only its class's
    jobs, so its GPU is never held by a synthetic dataset or the billing push."""
    s = get_settings()
    return queue_for(s.worker_compute, s.worker_gpus)


def queue_depth(queue: str) -> int:
    """Messages waiting on `queue` (not those a worker has reserved). A queue never declared on
    the broker has none."""
    with producer().connection_for_read() as conn:
        try:
            _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
        except Exception:  # kombu raises ChannelError (NOT_FOUND) for a queue not yet declared
            return 0
        return int(count)


def live_workers(timeout: float = 1.0) -> dict[str, list[str]] | None:
    """Each live worker's name and the queues it consumes, asked of the workers over the broker
    (Celery's remote control). None when the broker cannot broadcast (kombu's SQLAlchemy
    transport, the embedded default); {} when no worker answered within `timeout` seconds."""
    if not get_settings().resolved_broker_url.startswith(("redis://", "rediss://")):
        return None
    replies = producer().control.inspect(timeout=timeout).active_queues() or {}
    return {name: sorted(q["name"] for q in queues) for name, queues in replies.items()}
