"""DPO, full fine-tuning and the eval gate through the live stack: the API on a socket, a real
Celery worker, PostgreSQL, Redis, moto S3 and llama.cpp scoring the GGUF artifacts."""

from __future__ import annotations

import io
import random
import subprocess
from collections.abc import Iterator

import openai
import pytest

from tests.api.helpers import chat_row, jsonl, preference_rows, sentiment_rows
from tests.conftest import running_worker
from tests.worker.test_end_to_end import wait_for

pytestmark = pytest.mark.slow

# these tests are about the method, not the gate (nor its sample size: 24 rows hold out 12)
LENIENT = {"min_delta": -1.0, "max_chance_p_value": 1.0, "max_artifact_drop": 1.0, "min_eval_rows": 0}


@pytest.fixture(scope="module")
def worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker({"EDGETUNE_CHECKPOINT_STEPS": "10"}, platform.var_dir / "worker-methods.log") as proc:
        yield proc


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


def _upload(client: openai.OpenAI, rows: list) -> str:
    return client.files.create(file=("t.jsonl", io.BytesIO(jsonl(rows))), purpose="fine-tune").id


def _training_event(client: openai.OpenAI, job_id: str) -> dict:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
    return next(e.data for e in events if e.data and "trainable_params" in e.data)


def test_dpo_job_trains_on_preference_pairs_and_publishes(client, worker, tiny_base) -> None:
    job = client.fine_tuning.jobs.create(
        model=tiny_base,
        training_file=_upload(client, preference_rows(24, "openai")),
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": 4}}},
        extra_body={"targets": ["laptop-cpu"], "gate": LENIENT},
    )
    done = wait_for(client, job.id, ("succeeded",))
    assert done.method.type == "dpo" and done.hyperparameters.model_extra["beta"] == 0.2
    trained = _training_event(client, job.id)
    assert trained["reward_margins"] and trained["target_modules"] != "all"
    assert done.model_extra["eval_gate"]["passed"]
    assert [a.id for a in client.models.list().data if a.id == done.fine_tuned_model]


def test_full_fine_tune_trains_every_weight(client, worker, tiny_base, platform) -> None:
    job = client.fine_tuning.jobs.create(
        model=tiny_base,
        training_file=_upload(client, sentiment_rows(24)),
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
        extra_body={"training_type": "full", "targets": ["gpu-server"], "gate": LENIENT},
    )
    done = wait_for(client, job.id, ("succeeded",))
    trained = _training_event(client, job.id)
    assert trained["target_modules"] == "all" and trained["training_type"] == "full"
    plan_total = client.post(
        "/fine_tuning/jobs/plan",
        body={
            "model": tiny_base,
            "training_file": done.training_file,
            "training_type": "full",
            "gate": {"min_eval_rows": 0},  # 24 rows hold out 12, as the job was told to accept
        },
        cast_to=object,
    )["total_params"]
    assert trained["trainable_params"] == plan_total
    assert done.hyperparameters.learning_rate_multiplier == "auto"


def _validation(n: int) -> list:
    return sentiment_rows(n)[::-1]  # same reviews, other numbering; clean labels


def test_gate_passes_a_model_that_learned_and_fails_one_trained_on_shuffled_labels(
    client, worker, tiny_base, server, api_key
) -> None:
    rows = sentiment_rows(48)
    labels = [r["messages"][-1]["content"] for r in rows]
    random.Random(0).shuffle(labels)
    shuffled = [
        chat_row(r["messages"][1]["content"], lab, r["messages"][0]["content"])
        for r, lab in zip(rows, labels, strict=True)
    ]
    validation = _upload(client, _validation(20))  # the 20 rows the gate judges on by default
    gate = {"min_score": 0.8, "max_artifact_drop": 0.1}
    hp = {"n_epochs": 4, "batch_size": 4, "learning_rate_multiplier": 10}
    jobs = {
        name: client.fine_tuning.jobs.create(
            model=tiny_base,
            training_file=_upload(client, data),
            validation_file=validation,
            method={"type": "supervised", "supervised": {"hyperparameters": hp}},
            extra_body={"targets": ["laptop-cpu"], "gate": gate},
        )
        for name, data in (("learned", rows), ("shuffled", shuffled))
    }
    learned = wait_for(client, jobs["learned"].id, ("succeeded",))
    assert learned.model_extra["eval_gate"]["passed"]

    bad = wait_for(client, jobs["shuffled"].id, ("failed",))
    verdict = bad.model_extra["eval_gate"]
    print("shuffled:", verdict["reasons"])
    assert bad.error.code == "eval_gate_failed" and bad.error.param == "gate"
    assert not verdict["passed"] and any("min_score: fine-tuned" in r for r in verdict["reasons"])
    assert bad.fine_tuned_model is None
    arts = client.get("/artifacts", cast_to=object, options={"params": {"job_id": bad.id}})
    assert arts["data"] and {a["status"] for a in arts["data"]} == {"rejected"}  # kept, not published
    stages = [
        e.data["stage"]
        for e in client.fine_tuning.jobs.list_events(bad.id, limit=100).data
        if e.data and "stage" in e.data
    ]
    assert "gate" in stages and "publish" not in stages
