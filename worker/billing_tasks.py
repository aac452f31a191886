"""Periodic billing work: push the usage ledger's pending rows to the billing provider."""

from __future__ import annotations

import logging
from typing import Any

from infra.db import session_scope
from infra.queue import BILLING_PUSH
from services.billing import push_pending
from worker.celery_app import celery_app

log = logging.getLogger(__name__)


@celery_app.task(name=BILLING_PUSH, ignore_result=True)
def billing_push() -> dict[str, Any]:
    """Idempotent by construction (fixed keys per ledger row), so beat may fire it twice."""
    with session_scope() as session:
        report = push_pending(session=session)
    if report.provider and (report.pushed or report.error):
        log.info("billing push: %s", report.model_dump_json())
    return report.model_dump()
