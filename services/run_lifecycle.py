"""What jobs and synthetic datasets share on the service side of their life: the one rule for a
cancel. (The worker side, claim, heartbeat and recovery, is worker/lifecycle.py.)"""

from __future__ import annotations

from typing import Protocol

from domain.lists import TERMINAL
from infra.models import now
from services.errors import InvalidRequest


class Run(Protocol):
    id: str
    status: str
    cancel_requested: bool
    finished_at: int | None


def cancel_run(run: Run, *, what: str, param: str, code: str) -> None:
    """Cancel at once: the status says so to the customer now, and the flag tells the worker, which
    sees it at its next check, stops, and stores, publishes and bills nothing more. A run that has
    ended is a 400 naming `param`. The caller commits (with whatever else it changes)."""
    if run.status in TERMINAL:
        raise InvalidRequest(f"{what} {run.id} is already {run.status}", param=param, code=code)
    run.cancel_requested, run.status, run.finished_at = True, "cancelled", now()
