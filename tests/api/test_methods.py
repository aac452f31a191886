"""DPO and full fine-tuning at the API: preference files, method/file mismatches, and what the plan
says about each (tokens of both answers, every weight trainable, the reference's FLOPs)."""

from __future__ import annotations

import io

import httpx
import openai
import pytest

from tests.api.helpers import jsonl, preference_rows, sentiment_rows


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


@pytest.fixture()
def api(server, api_key) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120)


def _upload(client: openai.OpenAI, rows: list) -> str:
    return client.files.create(file=("t.jsonl", io.BytesIO(jsonl(rows))), purpose="fine-tune").id


def test_preference_files_upload_in_both_formats(client, api) -> None:
    for style in ("trl", "openai"):
        f = client.files.create(
            file=("p.jsonl", io.BytesIO(jsonl(preference_rows(5, style)))), purpose="fine-tune"
        )
        assert f.model_extra["row_count"] == 5
    bad = preference_rows(3)
    bad[1]["rejected"] = bad[1]["chosen"]  # a pair must differ
    r = api.post("/files", files={"file": ("p.jsonl", jsonl(bad))}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and "line 2" in r.json()["error"]["message"], r.text


def test_dpo_plan_counts_both_answers_and_the_reference(api, client, tiny_base) -> None:
    pairs = _upload(client, preference_rows(40))
    body = {"model": tiny_base, "training_file": pairs, "targets": ["laptop-cpu"]}
    sft_like = api.post(
        "/fine_tuning/jobs/plan", json={**body, "training_file": _upload(client, sentiment_rows(40))}
    ).json()
    dpo = api.post("/fine_tuning/jobs/plan", json={**body, "method": {"type": "dpo"}}).json()
    assert dpo["method_type"] == "dpo" and dpo["method"] == "lora", dpo
    # LoRA DPO starts from 5e-6 (TRL's LoRA DPO example), far below the catalog's LoRA SFT rate
    assert dpo["hyperparameters"]["learning_rate"] == pytest.approx(5e-6)
    assert dpo["hyperparameters"]["learning_rate"] < sft_like["hyperparameters"]["learning_rate"] / 10
    tokens = dpo["tokens"]
    # each pair trains on prompt+chosen and prompt+rejected: twice a single-answer row's tokens
    per_pair = tokens["train_tokens_per_epoch"] / tokens["train_rows"]
    assert per_pair == pytest.approx(tokens["mean_row_tokens"], rel=0.05)
    # per trained token DPO adds the reference's forward pass (2N) to LoRA's 4N: 1.5x
    per_token = dpo["training_flops"] / (
        tokens["train_tokens_per_epoch"] * dpo["hyperparameters"]["n_epochs"]
    )
    sft_tokens = sft_like["tokens"]["train_tokens_per_epoch"] * sft_like["hyperparameters"]["n_epochs"]
    assert per_token / (sft_like["training_flops"] / sft_tokens) == pytest.approx(1.5, rel=0.1)


def test_full_plan_trains_every_weight_at_the_full_rate(api, client, tiny_base) -> None:
    body = {
        "model": tiny_base,
        "training_file": _upload(client, sentiment_rows(40)),
        "targets": ["laptop-cpu"],
    }
    lora = api.post("/fine_tuning/jobs/plan", json=body).json()
    full = api.post("/fine_tuning/jobs/plan", json={**body, "training_type": "full"}).json()
    assert full["method"] == "full" and full["trainable_params"] == full["total_params"], full
    assert lora["trainable_params"] < lora["total_params"]
    assert full["hyperparameters"]["learning_rate"] == pytest.approx(2e-5)
    assert full["training_flops"] > lora["training_flops"]  # 6N against 4N
    h100 = {m["gpu"]: m for m in full["memory"]}["h100-80gb"]
    assert h100["peak_memory_gib"] > {m["gpu"]: m for m in lora["memory"]}["h100-80gb"]["peak_memory_gib"]


@pytest.mark.parametrize(
    ("method", "rows", "needle"),
    [
        ({"type": "dpo"}, sentiment_rows(10), "needs preference pairs"),
        ({"type": "supervised"}, preference_rows(10), "holds preference pairs"),
    ],
)
def test_a_file_of_the_other_kind_is_refused_naming_the_field(
    api, client, tiny_base, method, rows, needle
) -> None:
    body = {"model": tiny_base, "training_file": _upload(client, rows), "method": method}
    for path in ("/fine_tuning/jobs/plan", "/fine_tuning/jobs"):
        r = api.post(path, json=body)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert (
            err["param"] == "training_file"
            and err["code"] == "wrong_file_format"
            and needle in err["message"]
        )
    assert api.get("/fine_tuning/jobs").json()["data"] == []  # nothing stored


def test_dpo_needs_a_file_and_one_method_block(api, tiny_base) -> None:
    task = {"description": "Classify reviews as positive or negative.", "labels": ["positive", "negative"]}
    r = api.post("/fine_tuning/jobs", json={"model": tiny_base, "task": task, "method": {"type": "dpo"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file", r.text
    r = api.post(
        "/fine_tuning/jobs",
        json={"model": tiny_base, "task": task, "method": {"type": "supervised", "dpo": {}}},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "method", r.text
    r = api.post(
        "/fine_tuning/jobs",
        json={
            "model": tiny_base,
            "task": task,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 5}}},
        },
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "method.dpo.hyperparameters.beta", r.text
