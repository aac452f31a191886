"""The whole path through live parts: the API on a socket, a real Celery worker process on Redis,
PostgreSQL, moto's S3 server, the tiny LFM2 base, llama.cpp loading the published GGUF."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import running_worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker({"EDGETUNE_CHECKPOINT_STEPS": "10"}, platform.var_dir / "worker.log") as proc:
        yield proc


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


def wait_for(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...], timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if job.status in ("failed", "cancelled", "succeeded"):
            pytest.fail(f"job ended {job.status}: {job.error}")
        time.sleep(1)
    pytest.fail(f"job {job_id} did not reach {statuses} in {timeout}s")


def wait_event(client: openai.OpenAI, job_id: str, needle: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data):
            return
        time.sleep(0.5)
    pytest.fail(f"no event containing {needle!r} for {job_id}")


def test_fine_tune_from_upload_to_device_artifact(
    client, server, api_key, worker, tiny_base, tmp_path
) -> None:
    train = client.files.create(
        file=("train.jsonl", io.BytesIO(jsonl(sentiment_rows(48)))), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model=tiny_base,
        training_file=train.id,
        seed=7,
        suffix="e2e",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 4, "batch_size": 4, "learning_rate_multiplier": 10}
            },
        },
        extra_body={"targets": ["laptop-cpu", "gpu-server"]},
    )
    done = wait_for(client, job.id, ("succeeded",))
    assert done.fine_tuned_model and done.fine_tuned_model.startswith(f"ft:{tiny_base}:")
    assert done.trained_tokens and done.trained_tokens > 0 and done.hyperparameters.n_epochs == 4
    assert done.model_extra["total_cost_usd"] > 0

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [
        e for e in events if e.type == "metrics" and e.data and "train_loss" in e.data and "step" in e.data
    ]
    assert metrics and all(m.data["step"] > 0 for m in metrics)
    losses = [m.data["train_loss"] for m in sorted(metrics, key=lambda m: m.data["step"])]
    assert losses[-1] < losses[0]  # it learned
    stages = [
        e.data["stage"]
        for e in events
        if e.data and e.message.startswith("Stage") and "finished" in e.message
    ]
    assert set(stages) == {"prepare", "synthesize", "train", "evaluate", "export", "gate", "publish"}
    evaluation = next(e.data for e in events if e.data and "fine_tuned" in e.data)
    assert 0 <= evaluation["base"]["score"] <= 1 and 0 <= evaluation["fine_tuned"]["score"] <= 1
    print("eval:", evaluation, "gate:", done.model_extra["eval_gate"])
    gate = done.model_extra["eval_gate"]  # the default policy: better than base, artifacts within 0.05
    assert gate["passed"] and {c["rule"] for c in gate["checks"]} >= {
        "min_delta",
        "max_artifact_drop",
        "max_probe_drop",  # the evaluate stage scored the general-ability probe and the gate read it
    }
    # the random tiny base answers no probe item, before or after: a drop of 0 (eval/probe.py)
    probe = evaluation["probe"]
    assert probe["n"] == 64 and probe["base"]["score"] == probe["fine_tuned"]["score"] == probe["drop"] == 0
    # the GGUF target is scored in llama.cpp; the merged checkpoint is only held to its size budget
    assert set(gate["artifacts"]) == {"laptop-cpu", "gpu-server"}
    assert (
        gate["artifacts"]["gpu-server"]["score"] is None
        and gate["artifacts"]["laptop-cpu"]["score"] is not None
    )

    headers = {"Authorization": f"Bearer {api_key}"}
    report = httpx.get(f"{server.base_url}/fine_tuning/jobs/{job.id}/report", headers=headers).json()
    # the bare base, the base prompted with k training rows (the gate's baseline), the fine-tune,
    # and the GGUF without and with the grammar it ships with
    assert [s["subject"] for s in report["scores"]] == [
        "base",
        "base-prompted",
        "fine-tuned",
        "laptop-cpu (no grammar)",
        "laptop-cpu",
    ]
    assert report["scores"][2]["score"] == evaluation["fine_tuned"]["score"]
    assert report["scores"][1]["shots"] == evaluation["base_prompted"]["shots"] >= 1
    assert "prompted base" in next(c["detail"] for c in gate["checks"] if c["rule"] == "min_delta")
    assert report["prompting"]["summary"].startswith("fine-tuning added ")
    assert report["gate"]["passed"] and len(report["loss_curve"]) == len({m.data["step"] for m in metrics})
    # 20 held-out answers from two labels: an upload whose answers repeat is scored as classification
    assert evaluation["metric"] == "accuracy" and evaluation["n"] == 20
    assert {"fine-tuned", "laptop-cpu"} <= set(report["per_class"])
    page = httpx.get(f"{server.base_url}/fine_tuning/jobs/{job.id}/report.html", headers=headers)
    assert page.headers["content-type"].startswith("text/html") and page.text.count("<svg") == 2
    # scored on held-out rows while it trained; the best of those steps shipped (recipes/best_checkpoint)
    selection = report["checkpoint_selection"]
    measured = [step for step, _ in selection["history"]]
    assert len(measured) >= 2 and selection["best_step"] in measured
    assert all(0 <= score <= 1 for _, score in selection["history"])
    trained = next(e for e in events if e.message.startswith("Training finished"))
    assert f"ships step {selection['best_step']}" in trained.message
    assert "Checkpoint selection" in page.text

    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert ckpts and all(c.fine_tuning_job_id == job.id and c.step_number > 0 for c in ckpts)

    arts = httpx.get(f"{server.base_url}/artifacts", params={"job_id": job.id}, headers=headers).json()[
        "data"
    ]
    # a LoRA job ships its adapter alone too, beside each GGUF target
    assert {a["target"] for a in arts} == {"laptop-cpu", "gpu-server", "laptop-cpu-adapter"}
    gguf = next(a for a in arts if a["target"] == "laptop-cpu")
    adapter = next(a for a in arts if a["target"] == "laptop-cpu-adapter")
    assert adapter["format"] == "gguf-lora" and adapter["bytes"] < gguf["bytes"] / 4
    adapter_url = f"{server.base_url}/artifacts/{adapter['id']}"
    adapter_body = httpx.get(f"{adapter_url}/content", headers=headers).content
    assert adapter_body[:4] == b"GGUF" and hashlib.sha256(adapter_body).hexdigest() == adapter["sha256"]
    lora = httpx.get(f"{adapter_url}/manifest", headers=headers).json()["adapter"]
    assert lora["llama_cpp_flag"] == "--lora" and lora["base"]["model"] == tiny_base
    assert gguf["format"] == "gguf" and gguf["quantization"] == "Q4_K_M" and gguf["download_url"]
    body = httpx.get(f"{server.base_url}/artifacts/{gguf['id']}/content", headers=headers).content
    assert len(body) == gguf["bytes"] and hashlib.sha256(body).hexdigest() == gguf["sha256"]
    part = httpx.get(
        f"{server.base_url}/artifacts/{gguf['id']}/content", headers={**headers, "Range": "bytes=0-3"}
    )
    assert part.status_code == 206 and part.content == b"GGUF"
    assert httpx.get(gguf["download_url"]).content[:4] == b"GGUF"  # presigned S3 URL (moto)
    manifest = httpx.get(f"{server.base_url}/artifacts/{gguf['id']}/manifest", headers=headers).json()
    assert manifest["files"][0]["sha256"] == gguf["sha256"]
    # the labels' grammar, published beside the GGUF (and the adapter) and named in the manifest
    grammar = httpx.get(f"{server.base_url}/artifacts/{gguf['id']}/grammar", headers=headers)
    assert grammar.status_code == 200 and '"positive"' in grammar.text and '"negative"' in grammar.text
    assert manifest["grammar"]["sha256"] == hashlib.sha256(grammar.content).hexdigest()
    assert manifest["grammar"]["constrains"] == "labels"
    assert httpx.get(f"{adapter_url}/grammar", headers=headers).text == grammar.text
    missing = httpx.get(
        f"{server.base_url}/artifacts/{next(a['id'] for a in arts if a['target'] == 'gpu-server')}/grammar",
        headers=headers,
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "grammar_not_found"
    assert manifest["job_config"]["model"] == tiny_base and manifest["job_config"]["seed"] == 7
    assert manifest["eval"]["fine_tuned"]["score"] == evaluation["fine_tuned"]["score"]

    from llama_cpp import Llama

    path = tmp_path / "model.gguf"
    path.write_bytes(body)
    llm = Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
    out = llm.create_chat_completion(
        [{"role": "user", "content": "Great product, I love it"}], max_tokens=8, temperature=0
    )
    assert out["usage"]["completion_tokens"] >= 1

    # the same GGUF over the API with the openai SDK: the job's labels grammar holds by default
    answer = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "Great product, I love it"}]
    )
    assert answer.model == done.fine_tuned_model and answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content in ("positive", "negative")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens >= 1


def test_cancel_stops_a_running_job_and_publishes_nothing(client, worker, tiny_base, server, api_key) -> None:
    train = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(48)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=tiny_base,
        training_file=train.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50, "batch_size": 2}}},
    )
    wait_event(client, job.id, "training loss")
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    wait_event(
        client, job.id, "Worker stopped the job at stage train", timeout=60
    )  # the worker stopped training promptly
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    headers = {"Authorization": f"Bearer {api_key}"}
    assert (
        httpx.get(f"{server.base_url}/artifacts", params={"job_id": job.id}, headers=headers).json()["data"]
        == []
    )


def test_fine_tune_from_a_task_description_with_the_local_teacher(client, worker, tiny_base) -> None:
    """No training file: the worker serves the bundled SmolLM2 teacher with llama.cpp, synthesizes
    rows, stores them as files of the org, and trains on them."""
    job = client.fine_tuning.jobs.create(
        model=tiny_base,
        training_file=openai.omit,
        extra_body={
            "task": {
                "description": "Classify the sentiment of a short product review.",
                "labels": ["positive", "negative"],
                # the bundled 135M teacher names the label in most reviews (label_leak): 16 asked
                # give the 4 requests per row room to fill the floor (8 training rows, 3 per label)
                "num_examples": 16,
            },
            "targets": ["raspberry-pi-5"],
            # 16 rows hold out at most 8: judge on them knowingly (the default gate asks for 20),
            # where no score of 8 rows can be told from a guess (max_chance_p_value)
            "gate": {"min_eval_rows": 0, "max_chance_p_value": 1.0},
        },
    )
    done = wait_for(client, job.id, ("succeeded",), timeout=900)
    assert len(done.result_files) == 2  # the synthesized train and eval files
    rows = []
    for file_id in done.result_files:
        content = client.files.content(file_id).read().decode()
        rows += [json.loads(line) for line in content.splitlines()]
    assert len(rows) >= 4
    assert all(r["messages"][-1]["content"] in ("positive", "negative") for r in rows)
    users = [r["messages"][-2]["content"] for r in rows]
    assert len(set(users)) == len(users)  # no duplicates across train and eval
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    synth = next(e.data for e in events if e.data and "teacher_tokens" in e.data)
    assert synth["teacher_tokens"] > 0 and synth["report"]["kept"] == len(rows)
    # every round is an event: kept against asked, with its drop reasons
    rounds = [e.data["synthesis_round"] for e in events if e.data and "synthesis_round" in e.data]
    assert rounds and all(r["asked"] == 16 and 0 <= r["kept_total"] <= 16 for r in rounds)
    assert sorted(rounds, key=lambda r: r["round"]) == synth["report"]["rounds"]  # events: newest first
    # the round trip (measure, by default), held to the labels in the bundled server's form, told
    # as an event with how often a guess would agree; a warning when the teacher did no better
    trip = synth["report"]["round_trip"]
    assert trip["mode"] == "measure" and trip["structured_output"] == "json_object"
    assert trip["checked"] > 0 and trip["chance_rate"] == 0.5
    told = next(e for e in events if e.message.startswith("The teacher answered its own rows"))
    assert f"{trip['agreed']} of {trip['checked']} (guessing would agree with 50%)" in told.message
    assert told.level == ("warn" if "note" in trip else "info")
