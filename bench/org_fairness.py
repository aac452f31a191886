"""Another org's read latency while one org fires concurrent plans, and a plan's latency cold and
cached (issue 19 item 7).

    python -m bench.org_fairness [--rows 4000] [--concurrent 20] [--out results.json]

Starts a fresh API on embedded defaults (SQLite, local store, limits in process memory) in the
current directory's code, with the tiny LFM2 of the tests as base. The noisy org uploads a chat
file of `--rows` rows and plans it once (cold: the file is read and tokenized) and once more (what
a second plan of the same file costs); then fires `--concurrent` plans of it at once while the quiet
org lists its files every 50 ms; the burst plans a second copy of the file (never planned: cold)
and, as the official SDKs do, waits Retry-After and asks again on a 429. Printed: the two single
plans' seconds, the burst's final answers by status, its 429s, its wall time and slowest plan, and
the quiet org's p50 / p99 / max latency during the burst. Run it
from a checkout of an older commit (`cd <worktree> && python -m bench.org_fairness`, with this file
copied there) to get the before figures on the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.gpu_job import embedded_env, free_port, spawn, wait_healthy

BASE = "test/tiny-lfm2"


def setup(var_dir: Path) -> tuple[dict[str, str], str, str]:
    """Migrated embedded state under `var_dir`, the tiny base, and two orgs' keys."""
    import os

    env = embedded_env(var_dir, "cpu")
    os.environ.update(env)
    from infra.db import session_scope
    from infra.migrate import upgrade_head
    from services.orgs import create_key
    from tests.support.tiny_lfm2 import build_tiny_lfm2

    template = Path("recipes/chat_templates/lfm2.jinja").read_text()
    build_tiny_lfm2(var_dir / "models-in" / BASE, template)
    upgrade_head()
    with session_scope() as session:
        _, noisy = create_key(session=session, org_name="noisy")
        _, quiet = create_key(session=session, org_name="quiet")
    return env, noisy, quiet


def chat_file(rows: int) -> bytes:
    lines = []
    for i in range(rows):
        text = f"Review {i}: the battery lasts a day and the screen is sharp, " * 3
        label = "positive" if i % 2 else "negative"
        row = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}]}
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def timed_plan(client: httpx.Client, body: dict[str, Any]) -> tuple[int, float]:
    started = time.perf_counter()
    r = client.post("/fine_tuning/jobs/plan", json=body)
    return r.status_code, time.perf_counter() - started


def plan_until_done(client: httpx.Client, body: dict[str, Any]) -> tuple[int, float, int]:
    """As the official SDKs do on a 429: wait Retry-After, ask again. (final status, seconds, 429s)"""
    started, refused = time.perf_counter(), 0
    while True:
        r = client.post("/fine_tuning/jobs/plan", json=body)
        if r.status_code != 429 or refused >= 100:
            return r.status_code, time.perf_counter() - started, refused
        refused += 1
        time.sleep(float(r.headers.get("Retry-After", "1")))


def read_loop(client: httpx.Client, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        client.get("/files", params={"limit": 1}).raise_for_status()
        out.append(time.perf_counter() - started)
        time.sleep(0.05)


def burst(base: str, noisy: str, quiet: str, body: dict[str, Any], n: int) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {noisy}"}
    latencies: list[float] = []
    stop = threading.Event()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {quiet}"}, timeout=600) as q:
        reader = threading.Thread(target=read_loop, args=(q, stop, latencies))
        reader.start()
        started = time.perf_counter()
        with httpx.Client(base_url=base, headers=auth, timeout=600) as c, ThreadPoolExecutor(n) as pool:
            answers = list(pool.map(lambda _: plan_until_done(c, body), range(n)))
        wall = time.perf_counter() - started
        stop.set()
        reader.join()
    ordered = sorted(latencies)
    return {
        "burst_status": dict(Counter(str(code) for code, _, _ in answers)),
        "burst_429s_retried": sum(r for _, _, r in answers),
        "burst_wall_s": round(wall, 2),
        "burst_slowest_s": round(max(s for _, s, _ in answers), 2),
        "reader_requests": len(ordered),
        "reader_p50_s": round(statistics.median(ordered), 3),
        "reader_p99_s": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "reader_max_s": round(ordered[-1], 3),
    }


def run(rows: int, concurrent: int, var_dir: Path) -> dict[str, Any]:
    env, noisy, quiet = setup(var_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    api = spawn(["serve", "--port", str(port)], env, var_dir / "api.log")
    try:
        wait_healthy(base.removesuffix("/v1"), api, var_dir / "api.log")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {noisy}"}, timeout=600) as c:
            files = {"file": ("big.jsonl", chat_file(rows), "application/jsonl")}
            ids = [c.post("/files", files=files, data={"purpose": "fine-tune"}).json()["id"] for _ in "ab"]
            single = {"model": BASE, "training_file": ids[0]}
            cold, warm = timed_plan(c, single), timed_plan(c, single)
        assert cold[0] == warm[0] == 200, (cold, warm)
        result: dict[str, Any] = {"rows": rows, "concurrent": concurrent}
        result |= {"plan_cold_s": round(cold[1], 2), "plan_again_s": round(warm[1], 2)}
        # the burst plans the second file, never planned: every plan of it starts cold
        return result | burst(base, noisy, quiet, {"model": BASE, "training_file": ids[1]}, concurrent)
    finally:
        api.terminate()
        api.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--var-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    var_dir = args.var_dir or Path(tempfile.mkdtemp(prefix="edgetune-fairness-"))
    result = run(args.rows, args.concurrent, var_dir)
    print(json.dumps(result, indent=2))  # noqa: T201 - a person reads this
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
