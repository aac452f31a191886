"""The people's verbs (`edgetune jobs|artifacts`) and `cli.client` against the live API."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from cli.client import ApiError, EdgetuneClient
from cli.main import main
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import running_worker
from tests.support.artifacts import seed_artifact


@pytest.fixture()
def env(server, api_key) -> dict[str, str]:
    return {"EDGETUNE_API_URL": server.base_url.removesuffix("/v1"), "EDGETUNE_API_KEY": api_key}


@pytest.fixture()
def train(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(sentiment_rows(40)))
    return path


def cli(env: dict[str, str], *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_create_plan_list_get_events_cancel(env, train, tiny_base) -> None:
    common = ["--model", tiny_base, "--target", "laptop-cpu", "--budget-usd", "5"]
    plan = cli(env, "jobs", "create", "--file", str(train), *common, "--dry-run")
    quote = json.loads(plan.stdout)["quote"]["total_usd"]
    assert quote > 0 and f"quote ${quote:.4f}" in plan.stderr

    first = cli(env, "jobs", "create", "--file", str(train), *common, "--idempotency-key", "cli-1")
    job_id = first.stdout.strip()
    assert job_id.startswith("ftjob-") and "uploaded" in first.stderr
    file_id = json.loads(cli(env, "jobs", "get", job_id).stdout)["training_file"]
    again = cli(env, "jobs", "create", "--training-file", file_id, *common, "--idempotency-key", "cli-1")
    assert again.stdout.strip() == job_id  # same key, same body: the same job

    assert any(line.startswith(f"{job_id}\tqueued") for line in cli(env, "jobs", "list").stdout.splitlines())
    job = json.loads(cli(env, "jobs", "get", job_id).stdout)
    assert job["status"] == "queued" and job["targets"] == ["laptop-cpu"] and job["model"] == tiny_base
    events = cli(env, "jobs", "events", job_id).stdout.splitlines()
    assert "Created fine-tuning job" in events[0] and "quoted" in events[-1]  # oldest first
    assert cli(env, "jobs", "cancel", job_id).stdout.strip() == f"{job_id}\tcancelled"
    assert "already cancelled" in cli(env, "jobs", "cancel", job_id, code=1).output


def test_errors_are_one_line_with_the_field(env, tiny_base) -> None:
    assert "No such fine-tuning job" in cli(env, "jobs", "get", "ftjob-nope", code=1).output
    bad = cli(
        env,
        "jobs",
        "create",
        "--model",
        tiny_base,
        "--target",
        "toaster",
        "--task",
        "Classify reviews.",
        code=1,
    )
    assert "param: targets" in bad.output
    nokey = cli({**env, "EDGETUNE_API_KEY": ""}, "jobs", "list", code=1)
    assert "EDGETUNE_API_KEY" in nokey.output
    assert "401" in cli({**env, "EDGETUNE_API_KEY": "et-wrong"}, "jobs", "list", code=1).output
    assert "--job" in cli(env, "artifacts", "download", code=2).output


def test_wait_shows_progress_until_the_job_ends(env, train, tiny_base, api_key, server) -> None:
    """No worker: the job stays queued until cancelled from the side; --wait then ends with 1."""
    job_id = cli(env, "jobs", "create", "--file", str(train), "--model", tiny_base).stdout.strip()

    def cancel_soon() -> None:
        time.sleep(1.5)
        httpx.post(
            f"{server.base_url}/fine_tuning/jobs/{job_id}/cancel",
            headers={"Authorization": f"Bearer {api_key}"},
        )

    threading.Thread(target=cancel_soon).start()
    waited = cli(env, "jobs", "get", job_id, "--wait", "--poll", "0.2", code=1)
    assert json.loads(waited.stdout)["status"] == "cancelled"
    assert job_id in waited.stderr and f"{job_id}: cancelled" in waited.stderr


def test_artifacts_download_checks_sha256(env, train, tiny_base, api_key, tmp_path) -> None:
    job_id = cli(env, "jobs", "create", "--file", str(train), "--model", tiny_base).stdout.strip()
    cli(env, "jobs", "cancel", job_id)
    assert "has no artifacts" in cli(env, "artifacts", "download", "--job", job_id, code=1).output
    data = b"GGUF" + b"\x01" * 5000
    art = seed_artifact(api_key, job_id, data)
    out = tmp_path / "out"
    paths = cli(env, "artifacts", "download", "--job", job_id, "-o", str(out)).stdout.split()
    assert paths == [str(out / "model.gguf")] and (out / "model.gguf").read_bytes() == data
    again = cli(env, "artifacts", "download", art, "-o", str(tmp_path / "again")).stdout.strip()
    assert hashlib.sha256(Path(again).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_client_refuses_a_download_whose_sha256_differs(tmp_path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/content"):
            return httpx.Response(200, content=b"tampered")
        meta = {"id": "art-1", "filename": "m.gguf", "sha256": "0" * 64, "bytes": 8, "download_url": None}
        return httpx.Response(200, json=meta)

    client = EdgetuneClient("http://api.test", "et-x", transport=httpx.MockTransport(handler))
    with pytest.raises(ApiError, match="sha256"):
        client.download_artifact("art-1", tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-trusted is left behind


# ---- with a worker: the whole flow a person runs ----------------------------------------------


@pytest.fixture(scope="module")
def worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker({}, platform.var_dir / "cli-worker.log") as proc:
        yield proc


@pytest.mark.slow
def test_create_wait_download(env, tmp_path, tiny_base, worker) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(sentiment_rows(48)))
    config = tmp_path / "job.yaml"  # the hyperparameters test_end_to_end trains the tiny base with
    hp = {"n_epochs": 4, "batch_size": 4, "learning_rate_multiplier": 10}
    config.write_text(json.dumps({"method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}))
    args = f"--config {config} --file {path} --model {tiny_base} --target laptop-cpu --budget-usd 1"
    wait = "--idempotency-key cli-full --wait --poll 1 --timeout 900"
    created = cli(env, "jobs", "create", *args.split(), *wait.split())
    job_id = created.stdout.strip()
    assert f"{job_id}: succeeded" in created.stderr
    out = tmp_path / "artifacts"
    files = cli(env, "artifacts", "download", "--job", job_id, "-o", str(out)).stdout.split()
    # the laptop-cpu model and, the job being LoRA, its adapter alone
    assert sorted(Path(f).name for f in files) == ["lora-adapter-F16.gguf", "model-Q4_K_M.gguf"]
    assert all(Path(f).read_bytes()[:4] == b"GGUF" for f in files)


# ---- api-keys: the org's own keys over the API -------------------------------------------------


def _works(server, key: str) -> int:
    return httpx.get(f"{server.base_url}/files", headers={"Authorization": f"Bearer {key}"}).status_code


def test_api_keys_create_list_rotate_revoke(env, server) -> None:
    made = cli(env, "api-keys", "create", "--name", "deploy", "--expires-days", "30")
    key = json.loads(made.stdout)
    assert key["key"].startswith("et-") and key["name"] == "deploy" and key["expires_at"]
    assert "shown only this once" in made.stderr and key["key"] not in made.stderr
    assert _works(server, key["key"]) == 200
    listed = json.loads(cli(env, "api-keys", "list", "--limit", "100").stdout)
    assert key["id"] in [k["id"] for k in listed["data"]] and "key" not in listed["data"][0]
    got = json.loads(cli(env, "api-keys", "get", key["id"]).stdout)
    assert (got["status"], got["prefix"]) == ("active", key["prefix"]) and "key" not in got

    grace = 5
    rotated = cli(env, "api-keys", "rotate", key["id"], "--grace-seconds", str(grace))
    new = json.loads(rotated.stdout)
    assert new["rotated_from"] == key["id"] and new["name"] == "deploy" and new["key"] != key["key"]
    assert "shown only this once" in rotated.stderr and f"replaces {key['id']}" in rotated.stderr
    assert _works(server, new["key"]) == 200 and _works(server, key["key"]) == 200  # both, for now
    old = json.loads(cli(env, "api-keys", "get", key["id"]).stdout)
    assert abs(old["revoked_at"] - (new["created_at"] + grace)) <= 1  # the old key's last second
    deadline = time.monotonic() + grace + 10
    while _works(server, key["key"]) == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _works(server, key["key"]) == 401 and _works(server, new["key"]) == 200

    revoked = json.loads(cli(env, "api-keys", "revoke", new["id"]).stdout)
    assert revoked["status"] == "revoked" and _works(server, new["key"]) == 401
    assert "No such API key" in cli(env, "api-keys", "rotate", "key-nope", code=1).output


def test_api_keys_rotated_at_once_and_without_an_expiry(env, server) -> None:
    key = json.loads(cli(env, "api-keys", "create").stdout)
    assert key["name"] == "default" and key["expires_at"] is None
    new = json.loads(cli(env, "api-keys", "rotate", key["id"], "--expires-days", "1").stdout)
    assert _works(server, key["key"]) == 401 and _works(server, new["key"]) == 200
    assert abs(new["expires_at"] - new["created_at"] - 86400) <= 1
