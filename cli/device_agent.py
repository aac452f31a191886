"""`edgetune device-agent`: the loop a real device runs (issue 18). It says what it is, claims the
benchmark tasks of its org and profile one at a time, fetches each artifact (sha256-checked),
measures it with llama.cpp (eval/device_bench.py through llama-cpp-python, or llama.cpp's own
`llama-bench` binary, eval/llama_bench.py) while a heartbeat keeps its lease, and posts the
figures back. It needs the API's address and an agent key (POST /v1/device_agents), nothing else:
no database, no store, no queue."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from eval.device_bench import device_facts, measure_gguf
from eval.llama_bench import llama_bench_version, measure_llama_bench

# (gguf, context, prompt tokens, decode tokens, threads) -> the result the API takes
Measure = Callable[[Path, int, int, int, int], dict[str, Any]]

log = logging.getLogger("edgetune.device_agent")
REPORT_TRIES = 5  # posts of one outcome over network errors and 5xx, 1 2 4 8 16 s apart


class AgentError(RuntimeError):
    """The API refused the agent (a bad key, a profile its key is not for): it cannot go on."""


def _check(r: httpx.Response) -> dict[str, Any]:
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:500]
        raise AgentError(f"{r.request.method} {r.request.url.path}: HTTP {r.status_code}: {message}")
    return dict(r.json())


class _Heartbeat(threading.Thread):
    """Extends the task's lease until stopped; notes when the API says the lease was lost."""

    def __init__(self, client: httpx.Client, task: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.client, self.task, self.lost = client, task, False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.task["heartbeat_every_s"]):
            try:
                r = self.client.post(f"/device_agent/tasks/{self.task['id']}/heartbeat")
            except httpx.HTTPError as exc:  # a blip: the next beat may get through before the lease lapses
                log.warning("heartbeat failed: %r", exc)
                continue
            if r.status_code == 409:
                self.lost = True
                return

    def stop(self) -> None:
        self._stop_event.set()


def _download(client: httpx.Client, task: dict[str, Any], dest: Path) -> None:
    """The artifact to `dest`, its sha256 checked. A presigned URL is fetched without the agent's
    key (S3 refuses a second credential); the API's own stream with it, at the agent's own API
    address (the one the API put in the URL may be an internal one behind a proxy)."""
    digest = hashlib.sha256()
    own = f"/device_agent/tasks/{task['id']}/artifact"
    with (
        client.stream("GET", own)
        if task["download_needs_key"]
        else httpx.stream("GET", task["download_url"], timeout=60)
    ) as r:
        if r.status_code >= 400:
            raise RuntimeError(f"download failed: HTTP {r.status_code}")
        with dest.open("wb") as fh:
            for chunk in r.iter_bytes(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
    if digest.hexdigest() != task["sha256"]:
        raise RuntimeError(f"sha256 mismatch: got {digest.hexdigest()}, the task says {task['sha256']}")


def run_task(
    client: httpx.Client, task: dict[str, Any], threads: int, work_dir: Path, measure: Measure = measure_gguf
) -> str:
    """Fetch, measure and report one claimed task; returns its final status as the API says."""
    beat = _Heartbeat(client, task)
    beat.start()
    path = work_dir / f"{task['id']}.gguf"
    try:
        _download(client, task, path)
        s = task["settings"]
        figures = measure(path, s["context"], s["prompt_tokens"], s["decode_tokens"], threads)
        outcome, body = "result", figures
    except Exception as exc:  # the artifact did not load or run here: say so, the task is failed
        log.exception("task %s failed", task["id"])
        outcome, body = "failure", {"message": f"{type(exc).__name__}: {exc}"[:4000]}
    finally:
        beat.stop()
        path.unlink(missing_ok=True)
    if beat.lost:
        return "lease_lost"
    return _report(client, f"/device_agent/tasks/{task['id']}/{outcome}", body)


def _report(client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    """Post a task's outcome: retried over network errors and 5xx (a deploy, a blip); a 409 means
    the lease lapsed or the job stopped waiting (the task is no longer this agent's), any other
    refusal is logged; the agent goes on to the next task either way. A 401 ends the agent."""
    for attempt in range(REPORT_TRIES):
        try:
            r = client.post(path, json=body)
        except httpx.HTTPError as exc:
            log.warning("posting %s failed: %r", path, exc)
        else:
            if r.status_code == 409:
                return "lease_lost"
            if r.status_code < 500:
                try:
                    return str(_check(r)["status"])
                except AgentError as exc:
                    if r.status_code == 401:
                        raise
                    log.error("%s", exc)
                    return "refused"
        time.sleep(min(2**attempt, 30))
    return "unreported"


def _claim(client: httpx.Client) -> dict[str, Any] | None:
    """The next task, or None when there is none or the API cannot answer now (retried at the
    next poll). A refusal (a revoked key) ends the agent."""
    try:
        r = client.post("/device_agent/tasks/claim")
    except httpx.HTTPError as exc:
        log.warning("claim failed: %r", exc)
        return None
    if r.status_code == 204 or r.status_code >= 500:
        return None
    return _check(r)


def run_agent(
    api: str,
    key: str,
    profile: str,
    threads: int,
    poll_s: float,
    once: bool,
    llama_bench: Path | None = None,
) -> int:
    """Say hello, then take tasks until stopped (or, with `once`, until the queue is empty).
    With `llama_bench`, the binary's path, tasks are measured with it instead of llama-cpp-python."""
    client = httpx.Client(base_url=api.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=60)
    facts = device_facts(threads)
    measure: Measure = measure_gguf
    if llama_bench is not None:
        facts |= {"runtime": "llama.cpp (llama-bench)", "runtime_version": llama_bench_version(llama_bench)}
        measure = partial(measure_llama_bench, llama_bench)
    me = _check(client.post("/device_agent/hello", json={"profile": profile, **facts}))
    log.info("agent %s (%s) ready for profile %s", me["id"], me["name"], profile)
    done = 0
    with tempfile.TemporaryDirectory(prefix="edgetune-agent-") as tmp:
        while True:
            task = _claim(client)
            if task is None:
                if once:
                    return done
                time.sleep(poll_s)
                continue
            status = run_task(client, task, threads, Path(tmp), measure)
            log.info("task %s: %s", task["id"], status)
            done += 1
