"""The API sends a job's queue message just before it commits the job (so a queue outage stores
nothing): a worker that gets the message before the commit lands asks again instead of dropping it,
and a job that never appears is given up after the retries. Celery's eager mode runs the retries."""

from __future__ import annotations

import pytest
from celery.exceptions import MaxRetriesExceededError

from worker import tasks


def test_a_message_ahead_of_its_commit_is_retried_until_the_job_is_there(monkeypatch) -> None:
    visible = iter([False, False, True])
    ran: list[str] = []
    monkeypatch.setattr(tasks, "_job_exists", lambda job_id: next(visible))
    monkeypatch.setattr(tasks, "run_pipeline", ran.append)
    result = tasks.run_job.apply(args=["ftjob-late"])
    assert result.successful(), result.result
    assert ran == ["ftjob-late"]


def test_a_job_that_never_appears_is_dropped_after_the_retries(monkeypatch) -> None:
    checks: list[str] = []
    monkeypatch.setattr(tasks, "_job_exists", lambda job_id: checks.append(job_id) or False)
    monkeypatch.setattr(tasks, "run_pipeline", lambda job_id: pytest.fail("ran a job that does not exist"))
    result = tasks.run_job.apply(args=["ftjob-never"])
    assert isinstance(result.result, MaxRetriesExceededError)
    assert len(checks) == tasks.run_job.max_retries + 1
