"""A local edgetune on embedded defaults: the API and one worker as child processes of this one,
with their logs under `<var>/logs`. `make demo` (cli/demo.py) and the quality benchmark
(bench/task_quality.py) run their jobs on it; the settings (EDGETUNE_*) come from the environment
the children inherit, so a caller points them at another var dir by setting EDGETUNE_VAR_DIR.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.settings import get_settings


@dataclass(frozen=True)
class LocalStack:
    api_url: str  # http://127.0.0.1:<port>/v1
    logs: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@contextmanager
def local_stack() -> Iterator[LocalStack]:
    """Start the API (on a free port) and a worker; stop both on exit, even on an error."""
    logs = get_settings().var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = _spawn(["serve", "--port", str(port)], logs / "api.log")
    worker = _spawn(["worker"], logs / "worker.log")
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", api, logs / "api.log")
        yield LocalStack(api_url=f"http://127.0.0.1:{port}/v1", logs=logs)
    finally:
        for proc in (worker, api):
            proc.terminate()
        for proc in (worker, api):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
