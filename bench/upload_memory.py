"""Peak API memory and another org's read latency while a large training file is uploaded.

    python -m bench.upload_memory [--sizes 10,100,500] [--var-dir DIR] [--out results.json]

For each size (MB) it writes a valid chat JSONL file of that size, starts a fresh API on embedded
defaults (SQLite, local store; bench/gpu_job.py's helpers), and uploads the file with httpx
(streamed from disk) while a second org lists its files in a loop. A fresh API per size makes the
process's peak resident set (`VmHWM` in /proc) that upload's peak. Printed per size: upload wall
time, the API's resident set before and its peak, the reader's p50 / p99 / max latency during
the upload (issue 19: memory constant in the file's size, other orgs keep their latency), and the
CPU seconds the API used during the upload, in all and on its main thread (uvicorn's event loop:
what every other request waits behind).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.gpu_job import embedded_env, free_port, spawn, wait_healthy

ROW = {
    "messages": [
        {"role": "user", "content": "Is this review positive or negative: {} "},
        {"role": "assistant", "content": "positive"},
    ]
}


def write_file(path: Path, megabytes: int) -> int:
    """A valid chat JSONL of about `megabytes` MB (rows ~220 bytes, each distinct); its rows."""
    target, rows = megabytes * 1024 * 1024, 0
    with path.open("w") as fh:
        while fh.tell() < target:
            row = json.loads(json.dumps(ROW))
            row["messages"][0]["content"] = (
                ROW["messages"][0]["content"].format(rows) + "the battery lasts " * 6
            )
            fh.write(json.dumps(row) + "\n")
            rows += 1
    return rows


def rss_kib(pid: int) -> dict[str, int]:
    """The process's resident set now (VmRSS) and its peak (VmHWM), KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def cpu_s(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) the process, or one of its threads, has used (/proc stat)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()  # from the state on: utime, stime at 11, 12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_loop(base: str, key: str, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """(seconds since the loop began, latency) of each list request until `stop`."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        while not stop.is_set():
            started = time.perf_counter()
            c.get("/files", params={"limit": 1}).raise_for_status()
            out.append((started - t0, time.perf_counter() - started))
            time.sleep(0.05)


def keys(var_dir: Path) -> tuple[dict[str, str], str, str]:
    """The embedded environment under `var_dir` (migrated) and two orgs' keys: uploader, reader."""
    env = embedded_env(var_dir, "cpu")
    os.environ.update(env)
    from infra.db import session_scope
    from infra.migrate import upgrade_head
    from services.orgs import create_key

    upgrade_head()
    with session_scope() as session:
        _, uploader = create_key(session=session, org_name="uploader")
        _, reader = create_key(session=session, org_name="reader")
    return env, uploader, reader


def one_size(
    megabytes: int, var_dir: Path, env: dict[str, str], uploader: str, reader: str
) -> dict[str, Any]:
    data = var_dir / f"upload-{megabytes}mb.jsonl"
    rows = write_file(data, megabytes)
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    api = spawn(["serve", "--port", str(port)], env, var_dir / "api.log")
    try:
        wait_healthy(base.removesuffix("/v1"), api, var_dir / "api.log")
        before = rss_kib(api.pid)
        latencies: list[tuple[float, float]] = []
        stop = threading.Event()
        reader_thread = threading.Thread(target=read_loop, args=(base, reader, stop, latencies))
        reader_thread.start()
        started = time.perf_counter()
        cpu_before = cpu_s(api.pid), cpu_s(api.pid, api.pid)  # the main thread's id is the pid
        with data.open("rb") as fh, httpx.Client(timeout=3600) as c:
            r = c.post(
                f"{base}/files",
                data={"purpose": "fine-tune"},
                files={"file": (data.name, fh)},
                headers={"Authorization": f"Bearer {uploader}"},
            )
        wall = time.perf_counter() - started
        cpu_after = cpu_s(api.pid), cpu_s(api.pid, api.pid)
        stop.set()
        reader_thread.join()
        r.raise_for_status()
        after = rss_kib(api.pid)
    finally:
        api.terminate()
        api.wait(timeout=30)
    ordered = sorted(lat for _, lat in latencies)
    slow = [(round(at, 1), round(lat, 2)) for at, lat in latencies if lat > 0.5]
    return {
        "mb": megabytes,
        "bytes": data.stat().st_size,
        "rows": rows,
        "row_count": r.json()["row_count"],
        "upload_s": round(wall, 1),
        "api_cpu_s": round(cpu_after[0] - cpu_before[0], 1),
        "loop_cpu_s": round(cpu_after[1] - cpu_before[1], 1),
        "api_rss_before_mib": round(before["VmRSS"] / 1024, 1),
        "api_peak_mib": round(after["VmHWM"] / 1024, 1),
        "reads": len(ordered),
        "read_p50_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
        "read_p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1)
        if ordered
        else None,
        "read_max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
        "slow_reads_at_s": slow,  # (when in the upload, latency) of reads over 0.5 s
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,500", help="upload sizes in MB, comma-separated")
    p.add_argument("--var-dir", default=None)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    var_dir = Path(args.var_dir or tempfile.mkdtemp(prefix="edgetune-upload-bench-")).resolve()
    env, uploader, reader = keys(var_dir)
    results = []
    for mb in (int(s) for s in args.sizes.split(",")):
        results.append(one_size(mb, var_dir, env, uploader, reader))  # a fresh API each: its own peak
        print(json.dumps(results[-1]), flush=True)  # noqa: T201 - a person reads this
        (var_dir / f"upload-{mb}mb.jsonl").unlink()  # the next size needs the disk
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
