"""A running job that reaches its budget_usd stops with `budget_exhausted` and is never billed
past the cap. The worker prices compute 50x higher than the API quotes it, as a price change
between quote and run would: the quote passes the cap, the measured cost does not."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import running_worker

pytestmark = pytest.mark.slow


def wait_for_end(client: openai.OpenAI, job_id: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    pytest.fail(f"job {job_id} did not end in {timeout}s")


@pytest.fixture(scope="module")
def pricey_worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    env = {"EDGETUNE_PRICE_CPU_SECOND": "0.01"}
    with running_worker(env, platform.var_dir / "worker-budget.log") as proc:
        yield proc


def test_running_job_stops_at_its_budget(server, api_key, pricey_worker, tiny_base) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)
    train = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(48)))), purpose="fine-tune")
    cap = 0.1  # prepare costs ~0.01-0.03 here; 50 epochs of training ~0.2 and more
    job = client.fine_tuning.jobs.create(
        model=tiny_base,
        training_file=train.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50, "batch_size": 4}}},
        extra_body={"budget_usd": cap},
    )
    done = wait_for_end(client, job.id)
    assert done.status == "failed" and done.error.code == "budget_exhausted", done.error
    assert done.error.param == "budget_usd"
    assert 0 < done.model_extra["total_cost_usd"] <= cap + 1e-9
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert not any("has successfully completed" in m for m in messages)
    assert any("Stage train started" in m for m in messages)  # the trainer's own check stopped it
    assert not any("Stage evaluate started" in m for m in messages)
    assert not _artifacts(server, api_key, job.id)  # nothing published


def _artifacts(server, api_key: str, job_id: str) -> list[dict]:
    import httpx

    r = httpx.get(
        f"{server.base_url}/artifacts",
        params={"job_id": job_id},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    return list(r.json()["data"])
