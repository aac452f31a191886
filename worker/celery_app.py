"""The worker's Celery app: the shared broker configuration (infra/queue.py) plus the modules that
hold the worker's tasks."""

from __future__ import annotations

from infra.queue import make_celery

celery_app = make_celery(include=["worker.tasks", "worker.billing_tasks", "worker.synth_tasks"])
