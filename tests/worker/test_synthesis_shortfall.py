"""A job from a task description whose teacher keeps too few rows (issue 21), through live parts:
the API on a socket, a real Celery worker process, PostgreSQL, moto's S3, and as the operator's
teacher a local stand-in (tests/synth/fake_teacher.py) that names the label in 9 texts of 10, so
the filters drop them (label_leak) whatever the steering asks."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from infra.db import session_scope
from infra.models import Artifact, UsageRecord
from tests.conftest import running_worker
from tests.support.ledger import org_of
from tests.synth.fake_teacher import FakeTeacher, Reply, chat, task_script, words

pytestmark = pytest.mark.slow


def mostly_invalid(n: int, payload: dict[str, Any]) -> Reply:
    prompt = payload["messages"][-1]["content"]
    seed = int(payload.get("seed", n))
    if label := re.search(r"Write a (\w+) one about", prompt):
        text = words(seed).capitalize()
        return chat(f"{text}." if seed % 10 == 0 else f"{text}, clearly {label.group(1)}.")
    return task_script(n, payload)  # topics and sub-topics, as a competent teacher


@pytest.fixture(scope="module")
def teacher() -> Iterator[FakeTeacher]:
    with FakeTeacher(mostly_invalid) as fake:
        yield fake


@pytest.fixture(scope="module")
def worker(platform, tiny_base, teacher) -> Iterator[subprocess.Popen[bytes]]:
    env = {"EDGETUNE_TEACHER_BASE_URL": teacher.base_url, "EDGETUNE_TEACHER_MODEL": "fake-teacher"}
    with running_worker(env, platform.var_dir / "shortfall-worker.log") as proc:
        yield proc


def test_mostly_invalid_rows_end_the_job_insufficient_data_before_training(
    server, api_key, worker, tiny_base, teacher
) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)
    task = {
        "type": "classification",
        "description": "Classify the sentiment of a short product review.",
        "labels": ["positive", "negative"],
        "num_examples": 48,
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    r = httpx.post(
        f"{server.base_url}/fine_tuning/jobs/plan", json={"model": tiny_base, "task": task}, headers=headers
    )
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["synthesis"]["asked"] == 48 and plan["synthesis"]["eval_rows"] == 20  # the gate's 20
    assert plan["synthesis"]["floor"]["train"] == 14 and plan["tokens"]["train_rows"] == 28

    job = client.fine_tuning.jobs.create(
        model=tiny_base, training_file=openai.omit, extra_body={"task": task}
    )
    deadline = time.monotonic() + 600
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "failed",
        "succeeded",
        "cancelled",
    ):
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(1)

    assert job.status == "failed" and job.error and job.error.code == "insufficient_data", job.error
    assert job.error.param == "task.num_examples"
    assert "of the 48 rows asked" in job.error.message and "label_leak" in job.error.message
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    rounds = [e.data["synthesis_round"] for e in events if e.data and "synthesis_round" in e.data]
    assert len(rounds) >= 2 and all(r["asked"] == 48 for r in rounds)
    assert any(r["steered_against"] == "label_leak" for r in rounds)  # steered, and still short
    stages = {e.data.get("stage") for e in events if e.data and e.data.get("stage")}
    assert "train" not in stages and not any("Training" in e.message for e in events)

    # Nothing published; the kept rows are stored for the customer; the teacher's tokens are
    # billed, and no training, eval or export (prepare, which finished, keeps its seconds).
    with session_scope() as session:
        assert session.scalars(select(Artifact).where(Artifact.job_id == job.id)).all() == []
        ledger = session.scalars(select(UsageRecord).where(UsageRecord.job_id == job.id)).all()
        billed = {(u.stage, u.unit): (u.quantity, u.org_id) for u in ledger}
    assert {stage for stage, _ in billed} <= {"prepare", "synthesize"}
    tokens, org_id = billed[("synthesize", "teacher_1k_tokens")]
    assert tokens > 0 and org_id == org_of(api_key)
    kept = [
        json.loads(line) for f in job.result_files for line in client.files.content(f).read().splitlines()
    ]
    assert 0 < len(kept) < 48
