"""The browser target and the device budgets through the live stack: the API on a socket, a real
Celery worker, PostgreSQL, Redis, moto S3, onnxruntime and llama.cpp scoring the artifacts.

The worker reads an operator's profiles file (EDGETUNE_PROFILES) in which the Android phone asks
for an impossible decode speed (a `flag` rule: published, marked) and the Raspberry Pi allows 1 MB
of runtime memory (a `refuse` rule: the gate fails)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml

from domain.gate_policy import gate_refusing_nothing
from export.profiles import PROFILES_PATH
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import running_worker
from tests.worker.test_end_to_end import wait_for

pytestmark = pytest.mark.slow

# budgets are under test (24 rows hold out 12: not the gate's sample size either)
LENIENT = gate_refusing_nothing()
HP = {"n_epochs": 1, "batch_size": 4}


@pytest.fixture(scope="module")
def worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    profiles = yaml.safe_load(PROFILES_PATH.read_text())
    profiles["phone-android"]["min_decode_tokens_per_s"] = 1e9
    profiles["raspberry-pi-5"]["max_ram_mb"] = 1
    path = platform.var_dir / "profiles-budgets.yaml"
    path.write_text(yaml.safe_dump(profiles, sort_keys=False))
    env = {"EDGETUNE_PROFILES": str(path)}
    with running_worker(env, platform.var_dir / "worker-budgets.log") as proc:
        yield proc


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


def _job(client: openai.OpenAI, model: str, targets: list[str]) -> str:
    train = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(24)))), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model=model,
        training_file=train.id,
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": HP}},
        extra_body={"targets": targets, "gate": LENIENT},
    ).id


def test_browser_artifact_is_an_onnx_decoder_scored_in_onnxruntime_and_budgets_flag(
    client, worker, tiny_base, server, api_key
) -> None:
    done = wait_for(client, _job(client, tiny_base, ["browser-webgpu", "phone-android"]), ("succeeded",))
    gate = done.model_extra["eval_gate"]
    browser, phone = gate["artifacts"]["browser-webgpu"], gate["artifacts"]["phone-android"]
    assert browser["passed"] and browser["score"] is not None and browser["flags"] == []
    # the impossible speed floor is flagged, with the host it was measured on, and not refused
    assert phone["passed"] and len(phone["flags"]) == 1
    assert "min_decode_tokens_per_s: phone-android" in phone["flags"][0] and "host " in phone["flags"][0]
    budgets = {(c["subject"], c["rule"]) for c in gate["checks"]}
    for target in ("browser-webgpu", "phone-android"):
        assert {(target, b) for b in ("max_artifact_mb", "max_ram_mb", "min_decode_tokens_per_s")} <= budgets

    headers = {"Authorization": f"Bearer {api_key}"}
    arts = httpx.get(f"{server.base_url}/artifacts", params={"job_id": done.id}, headers=headers).json()[
        "data"
    ]
    onnx = next(a for a in arts if a["target"] == "browser-webgpu")
    assert onnx["format"] == "onnx" and onnx["quantization"] == "q4" and onnx["status"] == "published"
    body = httpx.get(f"{server.base_url}/artifacts/{onnx['id']}/content", headers=headers).content
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = set(tar.getnames())
    # transformers.js's layout: the graph under onnx/, config and tokenizer at the top
    assert {"onnx/model_q4.onnx", "config.json", "tokenizer.json", "chat_template.jinja"} <= names

    manifest = httpx.get(f"{server.base_url}/artifacts/{onnx['id']}/manifest", headers=headers).json()
    measured = manifest["extra"]["host_measurements"]
    # scored at the profile's 4096-token cap, cut to the tiny LFM2's trained 2048 (eval_context)
    assert measured["runtime"] == "onnxruntime" and measured["context"] == 2048
    assert measured["decode_tokens"] > 0 and measured["decode_tokens_per_s"] > 0
    assert measured["longest_sequence"] > 0 and "cache grown to" in measured["measured_at"]
    assert measured["peak_rss_growth_mb"] is not None and measured["host"]
    assert manifest["eval"]["artifact"]["score"] == browser["score"]
    phone_art = next(a for a in arts if a["target"] == "phone-android")
    phone_manifest = httpx.get(
        f"{server.base_url}/artifacts/{phone_art['id']}/manifest", headers=headers
    ).json()
    assert phone_manifest["extra"]["budget_flags"] == phone["flags"]
    assert phone_manifest["extra"]["host_measurements"]["runtime"] == "llama.cpp"


def test_an_artifact_over_its_memory_budget_is_refused_by_the_gate(client, worker, tiny_base) -> None:
    bad = wait_for(client, _job(client, tiny_base, ["raspberry-pi-5"]), ("failed",))
    verdict = bad.model_extra["eval_gate"]
    print("budget:", json.dumps(verdict["reasons"]))
    assert bad.error.code == "eval_gate_failed"
    assert not verdict["artifacts"]["raspberry-pi-5"]["passed"]
    (reason,) = verdict["reasons"]
    assert reason.startswith("max_ram_mb: raspberry-pi-5 measured") and "refused" in reason
    assert "llama.cpp with its cache allocated for context" in reason
