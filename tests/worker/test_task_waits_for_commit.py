"""The API sends a job's queue message just before it commits the job (so a queue outage stores
nothing): a worker that gets the message before the commit lands waits for it, holding the message
(a retry would be a new message with an ETA, which a worker holds beyond its prefetch of one), and
a job that never appears is dropped after the wait. Celery's eager mode runs the task."""

from __future__ import annotations

import pytest

from worker import tasks


def test_a_message_ahead_of_its_commit_waits_until_the_job_is_there(monkeypatch) -> None:
    visible = iter([False, False, True])
    ran: list[str] = []
    monkeypatch.setattr(tasks, "_job_exists", lambda job_id: next(visible))
    monkeypatch.setattr(tasks, "run_pipeline", ran.append)
    result = tasks.run_job.apply(args=["ftjob-late"])
    assert result.successful(), result.result
    assert ran == ["ftjob-late"]


def test_a_job_that_never_appears_is_dropped_after_the_wait(monkeypatch) -> None:
    checks: list[str] = []
    monkeypatch.setattr(tasks, "COMMIT_WAIT_S", 0.5)
    monkeypatch.setattr(tasks, "_job_exists", lambda job_id: checks.append(job_id) or False)
    monkeypatch.setattr(tasks, "run_pipeline", lambda job_id: pytest.fail("ran a job that does not exist"))
    result = tasks.run_job.apply(args=["ftjob-never"])
    assert result.successful()
    assert 2 <= len(checks) <= 5  # every 0.2 s for 0.5 s
