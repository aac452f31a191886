"""The registry through real jobs: the API on a socket, a Celery worker training the tiny LFM2,
PostgreSQL, Redis and moto S3. A job the gate refuses ends failed with its artifacts kept as
`rejected` (listed, downloadable) and a failed registry version; the next job of the same suffix
passes, becomes version 2, and only it can take the `prod` alias."""

from __future__ import annotations

import hashlib
import io
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import running_worker
from tests.worker.test_end_to_end import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker({}, platform.var_dir / "worker-registry.log") as proc:
        yield proc


def _job(client: openai.OpenAI, model: str, gate: dict[str, Any]) -> str:
    train = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(16)))), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model=model,
        training_file=train.id,
        suffix="reviews",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
        # 16 rows hold out 8: this test is about versions and aliases, not the gate's sample size
        extra_body={"targets": ["gpu-server"], "gate": {"min_eval_rows": 0, **gate}},
    ).id


def test_a_refused_job_keeps_rejected_artifacts_and_its_version_cannot_take_an_alias(
    server, api_key, worker, tiny_base
) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)
    # min_delta 1.0 cannot be beaten: fine-tuned minus base is at most 1.0 on scores in 0..1
    refused = wait_for(client, _job(client, tiny_base, {"min_delta": 1.0}), ("failed",))
    assert refused.error.code == "eval_gate_failed" and "status rejected" in refused.error.message
    assert refused.fine_tuned_model is None
    arts = client.get("/artifacts", cast_to=object, options={"params": {"job_id": refused.id}})["data"]
    assert [(a["target"], a["status"]) for a in arts] == [("gpu-server", "rejected")]
    body = httpx.get(
        f"{server.base_url}/artifacts/{arts[0]['id']}/content", headers={"Authorization": f"Bearer {api_key}"}
    ).content
    assert len(body) == arts[0]["bytes"] and hashlib.sha256(body).hexdigest() == arts[0]["sha256"]
    events = client.fine_tuning.jobs.list_events(refused.id, limit=100).data
    assert any(
        "rejected artifact(s) for inspection as version 1 of model reviews" in e.message for e in events
    )
    assert not any(e.data and e.data.get("stage") == "publish" for e in events)  # publish never ran

    passed = wait_for(
        client,
        _job(client, tiny_base, {"min_delta": -1.0, "max_chance_p_value": 1.0, "max_artifact_drop": 1.0}),
        ("succeeded",),
    )
    versions = client.get("/registry/models/reviews/versions", cast_to=object)["data"]
    assert [(v["version"], v["job_id"], v["gate_passed"]) for v in versions] == [
        (2, passed.id, True),
        (1, refused.id, False),
    ]
    assert versions[0]["fine_tuned_model"] == passed.fine_tuned_model
    assert versions[1]["artifact_ids"] == [arts[0]["id"]]

    with pytest.raises(openai.ConflictError) as refused_alias:
        client.put("/registry/models/reviews/aliases/prod", body={"version": 1}, cast_to=object)
    assert refused_alias.value.code == "version_failed_gate" and refused_alias.value.param == "version"
    client.put("/registry/models/reviews/aliases/prod", body={"version": 2}, cast_to=object)
    prod = client.get("/registry/models/reviews/aliases/prod", cast_to=object)
    assert prod["model_version"]["job_id"] == passed.id
    assert [a["status"] for a in prod["model_version"]["artifacts"]] == ["published"]
