"""The one cancel rule jobs and synthetic datasets share (services/run_lifecycle.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from domain.lists import TERMINAL
from services.errors import InvalidRequest
from services.run_lifecycle import cancel_run


@dataclass
class FakeRun:
    id: str = "run-1"
    status: str = "running"
    cancel_requested: bool = False
    finished_at: int | None = None


@pytest.mark.parametrize("status", ["queued", "validating_files", "running"])
def test_a_live_run_is_cancelled_at_once_and_flagged_for_the_worker(status: str) -> None:
    run = FakeRun(status=status)
    cancel_run(run, what="job", param="fine_tuning_job_id", code="job_not_cancellable")
    assert (run.status, run.cancel_requested) == ("cancelled", True) and run.finished_at


@pytest.mark.parametrize("status", TERMINAL)
def test_an_ended_run_is_a_400_naming_the_param_and_left_as_it_was(status: str) -> None:
    run = FakeRun(status=status, finished_at=5)
    with pytest.raises(InvalidRequest) as err:
        cancel_run(run, what="dataset", param="dataset_id", code="dataset_not_cancellable")
    assert (err.value.param, err.value.code) == ("dataset_id", "dataset_not_cancellable")
    assert err.value.message == f"dataset run-1 is already {status}"
    assert (run.status, run.cancel_requested, run.finished_at) == (status, False, 5)
