"""The one GPU job command: prove a whole fine-tune job on this machine, offline.

    python -m bench.gpu_job [--device cuda|cpu] [--shape 350m|1.2b|tiny] [--rows 300]
        [--targets gpu-server] [--epochs 1] [--batch-size 8] [--var-dir DIR] [--out summary.json]

It starts the API and a Celery worker as child processes on embedded defaults (SQLite database
and broker, local artifact directory: no PostgreSQL, Redis or S3), writes a random-weight LFM2 base
of the chosen shape (bench/recipes_throughput.py's shapes; `350m` is registered as
LiquidAI/LFM2-350M under EDGETUNE_MODELS_DIR, as real weights would be), uploads a training file of
`--rows` chat rows of varied length, submits a LoRA job and waits for it. It then prints each
stage's time (from the job's `Stage … finished` events), the training tokens/s (from its metrics
events) and the job's final status; the exit code is 0 only when the job succeeded.

The default target, `gpu-server`, ships the merged safetensors checkpoint and the PEFT adapter, so
neither llama.cpp nor onnxruntime is needed on the GPU machine. The eval gate is opened wide
(random weights cannot beat their base): the job path is what is proven, not the model.

On CPU (`--device cpu --shape tiny`) the same run takes a couple of minutes; tests/bench runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from domain.gate_policy import gate_refusing_nothing

MODEL_IDS = {"350m": "LiquidAI/LFM2-350M", "1.2b": "LiquidAI/LFM2-1.2B", "tiny": "bench/tiny-lfm2"}
LABELS = ("positive", "negative")
WORDS = (
    "the battery lasts all day but the screen is dim and the price was fair so i would buy it again "
    "shipping took two weeks the box was damaged support never answered my emails the sound is clear "
    "setup was quick and the app works well though the manual is confusing and the cable is short"
).split()
# Settings the embedded defaults replace: a server's database, broker or store must not be used.
SERVICE_VARS = (
    "EDGETUNE_DATABASE_URL",
    "EDGETUNE_BROKER_URL",
    "EDGETUNE_ARTIFACT_STORE",
    "EDGETUNE_S3_ENDPOINT_URL",
)


def say(msg: str) -> None:
    print(f"[gpu-job] {msg}", flush=True)  # noqa: T201 - a person reads this


# ---- set-up -------------------------------------------------------------------------------------


def embedded_env(var_dir: Path, device: str) -> dict[str, str]:
    """This process's environment on embedded defaults under `var_dir`, the base under models/.
    On `--device cpu` the worker sees no GPU, so prepare picks the CPU as on a CPU-only host."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env |= {"EDGETUNE_VAR_DIR": str(var_dir), "EDGETUNE_MODELS_DIR": str(var_dir / "models-in")}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here (use --device cpu)")


def write_base(shape: str, models_dir: Path) -> str:
    """A random-weight LFM2 of `shape` where the worker finds local weights; returns its model id."""
    from bench.recipes_throughput import write_model

    model_id = MODEL_IDS[shape]
    out = models_dir / model_id
    if not (out / "config.json").is_file():
        info = write_model(shape, str(out))
        say(f"wrote a random-weight {shape} LFM2 ({info['params']:,} parameters) to {out}")
    return model_id


def chat_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Review-sentiment rows whose user turns run from a few words to a few hundred (seeded)."""
    rng = random.Random(seed)
    system = "Classify the sentiment of the review. Answer with exactly one of: positive, negative."
    rows = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(int(rng.lognormvariate(3.5, 0.8)) + 3))
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"Review {i}: {words}"},
                    {"role": "assistant", "content": LABELS[i % 2]},
                ]
            }
        )
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], env=env, stdout=fh, stderr=subprocess.STDOUT
        )


def wait_healthy(base: str, api: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited; see {log}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not start in {timeout:.0f}s; see {log}")


# ---- the job ------------------------------------------------------------------------------------


def job_body(model: str, file_id: str, args: argparse.Namespace) -> dict[str, Any]:
    hp = {"n_epochs": args.epochs, "batch_size": args.batch_size}
    return {
        "model": model,
        "training_file": file_id,
        "seed": 0,
        "suffix": "gpu-job",
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        "targets": args.targets,
        # random weights: the gate must not refuse them for not beating their (random) base
        "gate": gate_refusing_nothing(),
    }


def all_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every event of the job, oldest first (the API pages newest first)."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = client.get(f"/fine_tuning/jobs/{job_id}/events", params=params).json()
        events += page["data"]
        if not page.get("has_more") or not page["data"]:
            return events[::-1]
        params["after"] = page["data"][-1]["id"]


def follow(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    """Print each new event once until the job ends; returns the finished job."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/fine_tuning/jobs/{job_id}").json()
        for e in all_events(client, job_id):
            if e["id"] not in seen:
                seen.add(e["id"])
                say(f"  {e['level']:5} {e['message']}")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s")
        time.sleep(2)


def summarize(job: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Stage seconds, training tokens/s and the outcome, from the job and its events."""
    stages = {
        e["data"]["stage"]: e["data"]["seconds"]
        for e in events
        if e.get("data") and "seconds" in e["data"] and "stage" in e["data"]
    }
    rates = [
        e["data"]["tokens_per_second"]
        for e in events
        if e["type"] == "metrics" and e.get("data") and e["data"].get("tokens_per_second")
    ]
    device = next((e["data"]["device"] for e in events if e.get("data") and "device" in e["data"]), None)
    trained = job.get("trained_tokens") or 0
    train_s = stages.get("train")
    return {
        "job_id": job["id"],
        "status": job["status"],
        "error": job.get("error"),
        "device": device,
        "stage_seconds": stages,
        "trained_tokens": trained,
        # per logging interval, as the metrics events report them (the first includes warm-up)
        "tokens_per_second_logged": rates,
        "tokens_per_second_median": sorted(rates)[len(rates) // 2] if rates else None,
        # the whole stage: process start, model load, training, merge and save
        "tokens_per_second_train_stage": round(trained / train_s, 1) if trained and train_s else None,
        "total_cost_usd": job.get("total_cost_usd"),
    }


def print_summary(summary: dict[str, Any]) -> None:
    say(f"job {summary['job_id']} on {summary['device']}: {summary['status']}")
    if summary["error"]:
        say(f"error: {summary['error']}")
    for stage, seconds in summary["stage_seconds"].items():
        say(f"  stage {stage:10} {seconds:9.1f} s")
    say(
        f"training: {summary['trained_tokens']:,} tokens; tokens/s per logged interval "
        f"{summary['tokens_per_second_logged']}, median {summary['tokens_per_second_median']}, "
        f"over the whole train stage {summary['tokens_per_second_train_stage']}"
    )


# ---- what the GPU machine must carry ------------------------------------------------------------


def imported_modules(var_dir: Path) -> set[str]:
    """Top-level modules every process of the run imported: this one's, and those the API, the
    worker and the training process logged under PYTHONPROFILEIMPORTTIME (`import time:` lines)."""
    names = {m.split(".")[0] for m in sys.modules}
    logs = [*(var_dir / "logs").glob("*.log"), *(var_dir / "work").glob("*/train-process/train.log")]
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("import time:") and "|" in line:
                name = line.rsplit("|", 1)[1].strip()
                if name and name != "imported package":
                    names.add(name.split(".")[0])
    return names


def distributions(modules: set[str]) -> dict[str, str]:
    """{distribution: version} of the installed packages that provide `modules` (the standard
    library and the project itself provide none)."""
    from importlib.metadata import packages_distributions, version

    provided = packages_distributions()
    return {d: version(d) for m in modules for d in provided.get(m, ())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    var_dir = Path(args.var_dir or tempfile.mkdtemp(prefix="edgetune-gpu-job-")).resolve()
    logs = var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = embedded_env(var_dir, args.device)
    if args.list_distributions:
        env["PYTHONPROFILEIMPORTTIME"] = "1"  # each process logs every module it imports
    for name in SERVICE_VARS:
        os.environ.pop(name, None)
    os.environ.update(env)  # this process migrates and creates the key with the same settings
    model = write_base(args.shape, var_dir / "models-in")
    data = var_dir / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(args.rows)))

    from infra.db import session_scope
    from infra.migrate import upgrade_head
    from services.orgs import create_key

    upgrade_head()
    with session_scope() as session:
        _, key = create_key(session=session, org_name="gpu-job")
    port = free_port()
    api = spawn(["serve", "--port", str(port)], env, logs / "api.log")
    worker = spawn(["worker"], env, logs / "worker.log")
    say(f"var dir {var_dir}; API on port {port}; logs in {logs}")
    try:
        wait_healthy(f"http://127.0.0.1:{port}", api, logs / "api.log")
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers=headers, timeout=120) as client:
            with data.open("rb") as fh:
                upload = client.post("/files", data={"purpose": "fine-tune"}, files={"file": fh})
            upload.raise_for_status()
            resp = client.post("/fine_tuning/jobs", json=job_body(model, upload.json()["id"], args))
            if resp.status_code != 200:
                raise SystemExit(f"job refused: {resp.status_code} {resp.text}")
            say(f"job {resp.json()['id']}: {model} ({args.shape}), {args.rows} rows, targets {args.targets}")
            job = follow(client, resp.json()["id"], args.timeout)
            summary = summarize(job, all_events(client, job["id"]))
    finally:
        for proc in (worker, api):
            proc.terminate()
        for proc in (worker, api):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    summary |= {"shape": args.shape, "model": model, "rows": args.rows, "var_dir": str(var_dir)}
    if args.list_distributions:
        found = distributions(imported_modules(var_dir))
        summary["distributions"] = {d: found[d] for d in sorted(found, key=str.lower)}
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--shape", choices=tuple(MODEL_IDS), default="350m")
    p.add_argument("--rows", type=int, default=300, help="training rows (about 10%% are held out)")
    p.add_argument("--targets", type=lambda s: s.split(","), default=["gpu-server"], help="comma-separated")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--var-dir", help="state, logs and artifacts (default: a new temporary dir)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the job")
    p.add_argument("--out", type=Path, help="also write the summary here as JSON")
    p.add_argument(
        "--list-distributions",
        action="store_true",
        help="log every import (PYTHONPROFILEIMPORTTIME) and list the distributions the job path used",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_device(args.device)
    summary = run(args)
    print_summary(summary)
    if "distributions" in summary:
        say("distributions imported: " + ", ".join(f"{d}=={v}" for d, v in summary["distributions"].items()))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    return 0 if summary["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
