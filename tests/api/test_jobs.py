"""Job creation rules, idempotency, pagination and cancel (no worker needed: jobs stay queued)."""

from __future__ import annotations

import io

import httpx
import openai
import pytest

from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import new_key


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


@pytest.fixture()
def train_file(client) -> str:
    return client.files.create(
        file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(40)))), purpose="fine-tune"
    ).id


def _bad(client, param_part: str, **kwargs) -> str:
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(**kwargs)
    body = exc.value.body
    assert isinstance(body, dict) and param_part in (body.get("param") or ""), body
    return str(body["message"])


def test_create_validates_each_field(client, train_file, tiny_base) -> None:
    assert "unknown base model" in _bad(
        client, "model", model="LiquidAI/NoSuchModel", training_file=train_file
    )
    msg = _bad(
        client, "targets", model=tiny_base, training_file=train_file, extra_body={"targets": ["toaster"]}
    )
    assert "laptop-cpu" in msg  # lists the valid names
    _bad(client, "training_file", model=tiny_base, training_file="file-doesnotexist")
    _bad(client, "training_file", model=tiny_base, training_file=openai.omit)  # neither a file nor a task
    _bad(
        client,
        "n_epochs",
        model=tiny_base,
        training_file=train_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}},
    )
    _bad(client, "suffix", model=tiny_base, training_file=train_file, suffix="bad suffix!")
    own = {"profile": "laptop-cpu", "budgets": {"min_prefill_tokens_per_s": -1}}
    _bad(
        client,
        "min_prefill_tokens_per_s",
        model=tiny_base,
        training_file=train_file,
        extra_body={"targets": [own]},
    )
    _bad(
        client,
        "labels",
        model=tiny_base,
        training_file=openai.omit,
        extra_body={"task": {"description": "Classify reviews.", "labels": ["a"]}},
    )
    _bad(client, "validation_file", model=tiny_base, training_file=train_file, validation_file=train_file)


def test_missing_lfm_weights_fail_at_create_with_where_to_put_them(client, train_file) -> None:
    msg = _bad(client, "model", model="LiquidAI/LFM2-350M", training_file=train_file)
    assert "LiquidAI/LFM2-350M" in msg and ("EDGETUNE_MODELS_DIR" in msg or "models-in" in msg)


def test_thinking_model_is_steered_to_base(client, train_file) -> None:
    msg = _bad(client, "model", model="LiquidAI/LFM2.5-1.2B-Thinking", training_file=train_file)
    assert "-Base" in msg


def test_another_orgs_training_file_is_rejected(server, train_file, tiny_base) -> None:
    other = openai.OpenAI(base_url=server.base_url, api_key=new_key(), max_retries=0)
    with pytest.raises(openai.BadRequestError, match="No such file"):
        other.fine_tuning.jobs.create(model=tiny_base, training_file=train_file)


def test_idempotency_list_retrieve_cancel_events(client, server, api_key, train_file, tiny_base) -> None:
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "abc-123"}
    body = {"model": tiny_base, "training_file": train_file, "metadata": {"team": "qa"}}
    first = httpx.post(f"{server.base_url}/fine_tuning/jobs", json=body, headers=headers).json()
    again = httpx.post(f"{server.base_url}/fine_tuning/jobs", json=body, headers=headers).json()
    assert first["id"] == again["id"] and first["status"] == "queued"
    reused = httpx.post(f"{server.base_url}/fine_tuning/jobs", json={**body, "seed": 1}, headers=headers)
    assert reused.status_code == 409 and reused.json()["error"]["param"] == "Idempotency-Key"
    jobs = [client.fine_tuning.jobs.create(model=tiny_base, training_file=train_file) for _ in range(3)]
    ids = [j.id for j in client.fine_tuning.jobs.list(limit=2).data]
    assert len(ids) == 2
    page = client.fine_tuning.jobs.list(limit=2)
    all_ids = [j.id for j in page]  # follows `after` cursors
    assert set(all_ids) == {first["id"], *(j.id for j in jobs)} and len(all_ids) == 4
    filtered = httpx.get(
        f"{server.base_url}/fine_tuning/jobs", params={"metadata[team]": "qa"}, headers=headers
    ).json()["data"]
    assert [j["id"] for j in filtered] == [first["id"]]
    job = client.fine_tuning.jobs.retrieve(first["id"])
    assert job.model == tiny_base and job.training_file == train_file and job.status == "queued"
    for j in [job, *jobs]:
        assert client.fine_tuning.jobs.cancel(j.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(job.id)
    events = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(events.data) == 2 and "cancel" in events.data[0].message.lower()
    assert len(list(client.fine_tuning.jobs.list_events(job.id))) >= 3
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=server.base_url, api_key=new_key(), max_retries=0).fine_tuning.jobs.retrieve(
            job.id
        )


def test_models_lists_catalog_and_local_bases(client, tiny_base) -> None:
    models = {m.id: m for m in client.models.list()}
    assert "LiquidAI/LFM2-350M" in models and tiny_base in models
    assert models[tiny_base].model_extra["details"]["available"] is True
    assert models["LiquidAI/LFM2-350M"].model_extra["details"]["license"]


def test_unknown_artifact_and_bad_limit(client, server, api_key) -> None:
    h = {"Authorization": f"Bearer {api_key}"}
    assert httpx.get(f"{server.base_url}/artifacts/art-nope", headers=h).status_code == 404
    r = httpx.get(f"{server.base_url}/fine_tuning/jobs", params={"limit": 1000}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_unreachable_queue_stores_no_job(client, server, api_key, train_file, tiny_base, monkeypatch) -> None:
    # With a real Redis stopped and started again: tests/api/test_queue_outage.py
    from infra import queue

    def broken() -> object:
        raise ConnectionError("broker down")

    monkeypatch.setattr(queue, "producer", broken)
    r = httpx.post(
        f"{server.base_url}/fine_tuning/jobs",
        json={"model": tiny_base, "training_file": train_file},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable"
    assert client.fine_tuning.jobs.list(limit=1).data == []


@pytest.fixture()
def tiny_llama(platform, tiny_base) -> str:
    """A local base of another family (a 1-layer Llama with the tiny LFM2's tokenizer)."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    out = platform.models_dir / "test" / "tiny-llama"
    if not (out / "config.json").is_file():
        src = platform.models_dir / "test" / "tiny-lfm2"
        cfg = LlamaConfig(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
        LlamaForCausalLM(cfg).save_pretrained(out)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (src / name).is_file():
                shutil.copy2(src / name, out / name)
    return "test/tiny-llama"


def test_a_target_whose_exporter_does_not_handle_the_base_family_is_refused(
    client, train_file, tiny_llama, tiny_base
) -> None:
    msg = _bad(
        client,
        "targets[1]",
        model=tiny_llama,
        training_file=train_file,
        extra_body={"targets": ["laptop-cpu", "browser-webgpu"]},
    )
    assert "browser-webgpu" in msg and "lfm2" in msg and "llama" in msg
    # the same target on an LFM2 base is accepted (the job is queued; no worker runs here)
    job = client.fine_tuning.jobs.create(
        model=tiny_base, training_file=train_file, extra_body={"targets": ["browser-webgpu"]}
    )
    assert job.status in ("queued", "validating_files")
