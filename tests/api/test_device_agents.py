"""Device agents (issue 18 item 1): an org's agents measure its GGUFs for their profile with a key
that opens nothing else; a task whose agent stops is taken by another agent of the profile; a task
no agent takes fails clearly. The agents here are real `edgetune device-agent` processes on this
machine, one per profile, the Raspberry Pi's throttled to one thread."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from export.profiles import gguf_parameters
from tests.conftest import _reset_caches, new_key
from tests.support.artifacts import cancelled_job, seed_artifact

pytestmark = pytest.mark.slow


def _api(server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _agent(org: httpx.Client, name: str, profile: str) -> tuple[str, str]:
    r = org.post("/device_agents", json={"name": name, "profile": profile})
    assert r.status_code == 200, r.text
    return r.json()["id"], r.json()["key"]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> Path:
    from tests.export.tiny_artifacts import tiny_quantized

    return tiny_quantized(tmp_path_factory.mktemp("agent-gguf"), "Q8_0")


def _settings(**env: str) -> Iterator[None]:
    """Settings for the API in this process, restored afterwards."""
    os.environ.update(env)
    _reset_caches()
    yield
    for k in env:
        os.environ.pop(k)
    _reset_caches()


@pytest.fixture()
def short_leases(platform) -> Iterator[None]:
    yield from _settings(EDGETUNE_DEVICE_LEASE_S="2")


@pytest.fixture()
def short_wait(platform) -> Iterator[None]:
    yield from _settings(EDGETUNE_DEVICE_TASK_WAIT_S="3")


# llama.cpp's own benchmark binary, built by `make install` at the llama.cpp llama-cpp-python vendors
LLAMA_BENCH = Path(sys.executable).with_name("llama-bench")


def _run_agent(server, key: str, profile: str, threads: int, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cli.main", "device-agent", "--profile", profile, "--api", server.base_url]
    cmd += ["--key", key, "--threads", str(threads), "--once", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def _wait_status(org: httpx.Client, bench_id: str, status: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (b := org.get(f"/device_benchmarks/{bench_id}").json())["status"] != status:
        assert time.monotonic() < deadline, b
        time.sleep(0.5)
    return dict(b)


def test_an_agent_key_opens_only_the_agent_routes(server, api_key, tiny_base) -> None:
    org = _api(server, api_key)
    agent_id, key = _agent(org, "pi-1", "raspberry-pi-5")
    assert key.startswith("etagent-") and key not in org.get("/device_agents").text
    agent = _api(server, key)
    assert agent.get("/fine_tuning/jobs").status_code == 401  # not an API key
    assert agent.get("/device_agents").status_code == 401
    assert org.post("/device_agent/tasks/claim").json()["error"]["code"] == "invalid_agent_key"
    forged = _api(server, "etagent-" + "x" * 43)
    assert forged.post("/device_agent/hello", json={}).json()["error"]["code"] == "invalid_agent_key"
    wrong = agent.post("/device_agent/hello", json={"profile": "laptop-cpu", "runtime": "llama.cpp"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "profile"
    bad = org.post("/device_agents", json={"name": "x", "profile": "toaster"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "profile"
    assert agent.post("/device_agent/tasks/claim").status_code == 204  # nothing queued
    # another org neither sees nor revokes it; its owner does, and the key is refused from then on
    other = _api(server, new_key())
    assert agent_id not in other.get("/device_agents").text
    assert other.delete(f"/device_agents/{agent_id}").status_code == 404
    assert org.delete(f"/device_agents/{agent_id}").json()["revoked_at"] is not None
    assert agent.post("/device_agent/tasks/claim").status_code == 401


def test_benchmarks_are_refused_for_what_no_agent_can_measure(server, api_key, tiny_base) -> None:
    org = _api(server, api_key)
    art = seed_artifact(api_key, cancelled_job(org, tiny_base), b"GGUF" + bytes(64))
    unknown = org.post("/device_benchmarks", json={"artifact_id": art, "profile": "toaster"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "profile"
    other = _api(server, new_key()).post("/device_benchmarks", json={"artifact_id": art})
    assert other.status_code == 404 and other.json()["error"]["param"] == "artifact_id"
    long_run = {"artifact_id": art, "profile": "raspberry-pi-5", "prompt_tokens": 4000, "decode_tokens": 200}
    too_long = org.post("/device_benchmarks", json=long_run)
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "prompt_tokens"
    assert org.get("/device_benchmarks", params={"artifact_id": art}).json()["data"] == []


def test_each_profiles_agent_measures_and_a_lost_agents_task_is_retried(
    server, api_key, tiny_base, gguf, short_leases
) -> None:
    org = _api(server, api_key)
    art = seed_artifact(api_key, cancelled_job(org, tiny_base), gguf.read_bytes())
    laptop_id, laptop_key = _agent(org, "laptop-1", "laptop-cpu")
    pi_id, pi_key = _agent(org, "pi-1", "raspberry-pi-5")
    _, ghost_key = _agent(org, "laptop-ghost", "laptop-cpu")
    _, outsider_key = _agent(_api(server, new_key()), "theirs", "laptop-cpu")
    on_laptop = org.post("/device_benchmarks", json={"artifact_id": art, "prompt_tokens": 64}).json()
    on_pi = org.post("/device_benchmarks", json={"artifact_id": art, "profile": "raspberry-pi-5"}).json()
    assert on_laptop["profile"] == "laptop-cpu" and on_laptop["settings"]["context"] == 32768
    assert on_pi["settings"]["context"] == 4096

    # another org's agent of the same profile sees nothing and can touch nothing
    outsider = _api(server, outsider_key)
    assert outsider.post("/device_agent/tasks/claim").status_code == 204
    assert outsider.post(f"/device_agent/tasks/{on_laptop['id']}/heartbeat").status_code == 404

    # an agent takes the laptop task, fetches it, then stops answering (as if unplugged)
    ghost = _api(server, ghost_key)
    held = ghost.post("/device_agent/tasks/claim").json()
    assert held["id"] == on_laptop["id"] and held["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert httpx.get(held["download_url"]).content == gguf.read_bytes()  # presigned on S3
    streamed = ghost.get(f"/device_agent/tasks/{held['id']}/artifact")
    assert streamed.status_code == 200 and streamed.content == gguf.read_bytes()
    assert outsider.get(f"/device_agent/tasks/{held['id']}/artifact").status_code == 404
    back = _wait_status(org, on_laptop["id"], "queued")  # its 2 s lease lapsed
    assert back["attempts"] == 1 and back["agent_id"] is None

    laptop = _run_agent(server, laptop_key, "laptop-cpu", threads=2)
    pi = _run_agent(
        server, pi_key, "raspberry-pi-5", 1, "--llama-bench", str(LLAMA_BENCH)
    )  # no Python binding
    assert laptop.returncode == 0 and "1 task(s) measured" in laptop.stdout, laptop.stderr[-3000:]
    assert pi.returncode == 0 and "1 task(s) measured" in pi.stdout, pi.stderr[-3000:]

    done = org.get(f"/device_benchmarks/{on_laptop['id']}").json()
    assert done["status"] == "succeeded" and done["attempts"] == 2 and done["agent_id"] == laptop_id
    result = done["result"]
    assert result["decode_tokens_per_s"] > 0 and result["prefill_tokens_per_s"] > 0
    assert result["load_seconds"] > 0 and result["context"] == 32768 and result["prompt_tokens"] == 64
    assert result["threads"] == 2 and result["runtime"] == "llama.cpp"
    assert result["runtime_version"].startswith("llama-cpp-python ")
    assert result["device"]["cores"] == os.cpu_count() and result["device"]["ram_mb"] > 0
    if result["peak_memory_mb"] is not None:  # Linux: the cache for 32k tokens was allocated
        assert result["peak_memory_mb"] > 0
    pi_done = org.get(f"/device_benchmarks/{on_pi['id']}").json()
    assert pi_done["status"] == "succeeded" and pi_done["result"]["threads"] == 1
    # llama-bench: prefill and decode as it times them, the model's parameter count and its build;
    # no load time, and no memory (its cache is sized to its own tokens, not the profile's context)
    bench = pi_done["result"]
    assert bench["runtime"] == "llama.cpp (llama-bench)"
    assert bench["runtime_version"].startswith("llama-bench commit ")
    assert bench["prefill_tokens_per_s"] > 0 and bench["decode_tokens_per_s"] > 0
    assert bench["model_n_params"] == gguf_parameters(gguf) and bench["prompt_tokens"] == 128
    assert bench["peak_memory_mb"] is None and bench["load_seconds"] is None
    assert result["model_n_params"] == bench["model_n_params"]  # llama-cpp-python counts the same
    agents = {a["id"]: a for a in org.get("/device_agents").json()["data"]}
    assert agents[pi_id]["facts"]["runtime"] == "llama.cpp (llama-bench)"
    # a published artifact measured on request keeps its file (only a job's candidate copies go)
    assert org.get(f"/artifacts/{art}/content").content == gguf.read_bytes()

    # the lost agent comes back too late: its result is refused, the measured one stands
    measured = {k: v for k, v in result.items() if k not in ("agent_id", "agent_name", "device")}
    late = ghost.post(
        f"/device_agent/tasks/{held['id']}/result", json=measured | {"decode_tokens_per_s": 1e6}
    )
    assert late.status_code == 409 and late.json()["error"]["code"] == "lease_lost"
    assert org.get(f"/device_benchmarks/{on_laptop['id']}").json()["result"] == result
    agents = {a["name"]: a for a in org.get("/device_agents").json()["data"]}
    assert agents["laptop-1"]["online"] and agents["laptop-1"]["facts"]["threads"] == 2


def test_a_task_no_agent_takes_fails_clearly(server, api_key, tiny_base, short_wait) -> None:
    org = _api(server, api_key)
    art = seed_artifact(api_key, cancelled_job(org, tiny_base), b"GGUF" + bytes(64))
    bench = org.post("/device_benchmarks", json={"artifact_id": art, "profile": "raspberry-pi-5"}).json()
    failed = _wait_status(org, bench["id"], "failed", timeout=20)
    assert failed["error"]["code"] == "no_agent" and "raspberry-pi-5" in failed["error"]["message"]
