"""Jobs per hour against the number of workers, for small CPU jobs (issue 17 item 4).

    python -m bench.fleet_throughput [--workers 1,2,4] [--jobs 8] [--rows 40] [--epochs 2]
        [--threads-per-worker N] [--out results.json]

For each worker count N, a fresh fleet: one PostgreSQL database (created on the machine's server at
127.0.0.1:5432, dropped afterwards), Redis at 127.0.0.1:6379 as the broker (a queue of its own), a
local artifact directory every worker reads and writes (the S3 bucket of a real fleet), the API as
a child process, and N workers, each a "machine" of its own (own var dir, own process group) in the
`cpu` pool. `--jobs` jobs of the tiny LFM2 (the tests' random 4M-parameter model) on `--rows`
sentiment rows are submitted at once; the clock runs from the first submission to the last job's
end. Printed per N: wall seconds, jobs/hour, the mean and slowest job (created to finished), and
how many jobs each worker ran (from each job's "Job running on" event).

Each worker gets `--threads-per-worker` torch threads (OMP_NUM_THREADS; default: the machine's
cores / N, at least 1); its llama.cpp stages (GGUF scoring) take half the cores whatever N is
(eval/runtime_stats.py default_threads). A real fleet gives each worker its own cores; on one
machine N workers share them, so N beyond the core count measures contention, not a fleet. The
machine's cores are printed with the figures for that reason.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.gpu_job import free_port, spawn, wait_healthy
from domain.gate_policy import gate_refusing_nothing
from tests.support.databases import create_database, drop_database

REDIS = "redis://127.0.0.1:6379/11"
BASE = "bench/tiny-lfm2"
REVIEWS = (
    ("I love this product, great quality", "positive"),
    ("Terrible, it broke after a day", "negative"),
    ("Excellent price and great service", "positive"),
    ("Awful screen and bad battery", "negative"),
)
SYSTEM = "Classify the sentiment of the review. Answer with exactly one of: positive, negative."
# The jobs measure scheduling and the stages' work, not quality: no replay answers to generate, the
# last step shipped, and a gate the random model passes.
LIGHT = {
    "replay": {"fraction": 0},
    "checkpoints": {"select": "last"},
    "gate": gate_refusing_nothing(),
}
ENDED = ("succeeded", "failed", "cancelled")
OPERATOR = secrets.token_hex(16)


def say(msg: str) -> None:
    print(f"[fleet] {msg}", flush=True)  # noqa: T201 - a person reads this


def training_file(rows: int) -> bytes:
    lines = []
    for i in range(rows):
        text, label = REVIEWS[i % len(REVIEWS)]
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{text} ({i})"},
            {"role": "assistant", "content": label},
        ]
        lines.append(json.dumps({"messages": messages}))
    return ("\n".join(lines) + "\n").encode()


@contextmanager
def fresh_database() -> Iterator[str]:
    name, url = create_database("edgetune_fleet")
    try:
        yield url
    finally:
        drop_database(name)


def fleet_env(root: Path, db_url: str) -> dict[str, str]:
    """Settings every process of one fleet shares; each worker adds its own var dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETUNE_")}
    return env | {
        "EDGETUNE_VAR_DIR": str(root / "api"),
        "EDGETUNE_DATABASE_URL": db_url,
        "EDGETUNE_BROKER_URL": REDIS,
        "EDGETUNE_QUEUE": f"edgetune-fleet-{secrets.token_hex(6)}",
        "EDGETUNE_ARTIFACT_STORE": f"file://{root / 'store'}",
        "EDGETUNE_MODELS_DIR": str(root / "models-in"),
        "EDGETUNE_COMPUTE_POOLS": "cpu",
        "EDGETUNE_OPERATOR_TOKEN": OPERATOR,
        "CUDA_VISIBLE_DEVICES": "",
    }


def prepare(root: Path, env: dict[str, str]) -> str:
    """Migrate the database, write the tiny base, and return an API key (in this process, with the
    fleet's settings)."""
    os.environ.update(env)
    from infra.db import get_engine, get_sessionmaker, session_scope
    from infra.migrate import upgrade_head
    from infra.settings import get_settings
    from infra.storage import get_store
    from services.orgs import create_key
    from tests.support.tiny_lfm2 import build_tiny_lfm2

    for fn in (get_settings, get_engine, get_sessionmaker, get_store):
        fn.cache_clear()  # a fresh database per fleet
    build_tiny_lfm2(root / "models-in" / BASE, Path("recipes/chat_templates/lfm2.jinja").read_text())
    upgrade_head(env["EDGETUNE_DATABASE_URL"])
    with session_scope() as session:
        _, key = create_key(session=session, org_name="fleet-bench")
    get_engine().dispose()
    return key


def start_workers(root: Path, env: dict[str, str], n: int, threads: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        var = root / f"worker-{i}"
        var.mkdir(parents=True)
        own = env | {"EDGETUNE_VAR_DIR": str(var), "EDGETUNE_WORKER_COMPUTE": "cpu"}
        own |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with (root / f"worker-{i}.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "worker"],
                    env=own,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )
    return procs


def stop(workers: list[subprocess.Popen[bytes]], api: subprocess.Popen[bytes]) -> None:
    """Each worker with its process group (its stage processes too), then the API."""
    for proc in workers:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    api.terminate()
    api.wait(timeout=30)


def wait_online(base: str, n: int, timeout: float = 300) -> None:
    """Until the operator's view lists `n` live workers on the cpu queue: the clock starts with the
    whole fleet up, not while its last worker is still importing torch."""
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = httpx.get(f"{base}/operator/pools", headers=headers, timeout=30).json()["data"]
        if sum(len(p["live_workers"] or []) for p in pools) >= n:
            return
        time.sleep(1)
    raise TimeoutError(f"fewer than {n} workers online after {timeout:.0f}s")


def submit(client: httpx.Client, jobs: int, rows: int, epochs: int) -> list[str]:
    files = {"file": ("reviews.jsonl", training_file(rows), "application/jsonl")}
    r = client.post("/files", files=files, data={"purpose": "fine-tune"})
    r.raise_for_status()
    hp = {"n_epochs": epochs, "batch_size": 8}
    body = {
        "model": BASE,
        "training_file": r.json()["id"],
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        "compute_class": "cpu",
        **LIGHT,
    }
    ids = []
    for _ in range(jobs):
        r = client.post("/fine_tuning/jobs", json=body)
        r.raise_for_status()
        ids.append(r.json()["id"])
    return ids


def wait_all(client: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - len(done)} of {len(ids)} jobs not done after {timeout:.0f}s")
        for job_id in set(ids) - set(done):
            job = client.get(f"/fine_tuning/jobs/{job_id}").json()
            if job["status"] in ENDED:
                done[job_id] = job
        time.sleep(1)
    return done


def ran_on(client: httpx.Client, job_id: str) -> int | None:
    """The pid of the worker whose "Job running on" event came last (the one that finished it)."""
    page = client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()
    for e in page["data"]:  # newest first
        if e["message"].startswith("Job running on") and e.get("data"):
            return int(e["data"]["pid"])
    return None


def job_seconds(job: dict[str, Any]) -> float:
    finished = job.get("finished_at")
    return float(finished - job["created_at"]) if finished else float("nan")


def one_fleet(n: int, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"edgetune-fleet-{n}-"))
    with fresh_database() as db_url:
        env = fleet_env(root, db_url)
        key = prepare(root, env)
        port = free_port()
        api = spawn(["serve", "--port", str(port)], env, root / "api.log")
        workers = start_workers(root, env, n, threads)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", api, root / "api.log")
            wait_online(f"http://127.0.0.1:{port}/v1", n)
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers=headers, timeout=120) as c:
                started = time.monotonic()
                ids = submit(c, args.jobs, args.rows, args.epochs)
                done = wait_all(c, ids, args.timeout)
                wall = time.monotonic() - started
                pids = {job_id: ran_on(c, job_id) for job_id in ids}
        finally:
            stop(workers, api)
    by_worker = Counter(pids[j] for j in ids)
    seconds = [job_seconds(j) for j in done.values()]
    result = {
        "workers": n,
        "threads_per_worker": threads,
        "jobs": args.jobs,
        "statuses": dict(Counter(j["status"] for j in done.values())),
        "wall_s": round(wall, 1),
        "jobs_per_hour": round(args.jobs * 3600 / wall, 1),
        "job_mean_s": round(sum(seconds) / len(seconds), 1),
        "job_max_s": round(max(seconds), 1),
        "jobs_per_worker": sorted(by_worker.values(), reverse=True),
    }
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        result["dir"] = str(root)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2,4", help="comma list of worker counts")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=0, help="0: the machine's cores / N")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--keep", action="store_true", help="keep each fleet's directory (logs, var dirs)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"date": datetime.now().isoformat(timespec="seconds"), "cores": cores}
    results["load_before"] = round(os.getloadavg()[0], 2)
    results["fleets"] = []
    for n in (int(w) for w in args.workers.split(",")):
        threads = args.threads_per_worker or max(1, cores // n)
        say(f"{n} worker(s), {threads} thread(s) each, {args.jobs} jobs of {args.rows} rows x {args.epochs}")
        fleet = one_fleet(n, args, threads)
        say(
            f"  {fleet['statuses']} in {fleet['wall_s']} s: {fleet['jobs_per_hour']} jobs/h; job mean "
            f"{fleet['job_mean_s']} s, slowest {fleet['job_max_s']} s; "
            f"jobs per worker {fleet['jobs_per_worker']}"
        )
        results["fleets"].append(fleet)
    text = json.dumps(results, indent=2)
    print(text)  # noqa: T201
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if all(set(f["statuses"]) == {"succeeded"} for f in results["fleets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
