"""A synthetic dataset whose worker is SIGKILLed must not stay `running` forever: another worker
runs it again from its seed, and once attempts run out it fails with `worker_lost`. The teacher is
the slow local stand-in, so each run is long enough to kill."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.db import session_scope
from infra.models import SyntheticDataset
from tests.conftest import start_worker
from tests.synth.fake_teacher import FakeTeacher, Reply, task_script

pytestmark = pytest.mark.slow

SECRET = "sk-teacher-secret-recovery"
ENV = {
    "EDGETUNE_JOB_HEARTBEAT_S": "1",
    "EDGETUNE_JOB_STALE_AFTER_S": "6",
    "EDGETUNE_JOB_MAX_ATTEMPTS": "2",
}


def _slow(n: int, payload: dict[str, Any]) -> Reply:
    reply = task_script(n, payload)
    reply.delay_s = 1.0
    return reply


def _until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _row(ds_id: str) -> SyntheticDataset:
    with session_scope() as session:
        ds = session.get(SyntheticDataset, ds_id)
        assert ds is not None
        session.expunge(ds)
        return ds


def test_lost_worker_dataset_is_rerun_then_failed_when_attempts_run_out(server, api_key, platform) -> None:
    api = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    task = {"type": "classification", "description": "Sort reviews by sentiment.", "labels": ["pos", "neg"]}
    workers: list[subprocess.Popen[bytes]] = []

    def worker(name: str) -> subprocess.Popen[bytes]:
        workers.append(start_worker(ENV, Path(platform.var_dir) / f"synth-{name}.log"))
        return workers[-1]

    try:
        with FakeTeacher(_slow) as teacher:
            victim = worker("victim")
            teacher_opts = {"base_url": teacher.base_url, "api_key": SECRET, "max_concurrency": 1}
            body = {"task": {**task, "num_examples": 400}, "teacher": teacher_opts}
            ds_id = api.post("/synthetic_datasets", json=body).json()["id"]
            _until(lambda: teacher.hits >= 2, "the first worker's teacher requests")
            _kill(victim)
            assert api.get(f"/synthetic_datasets/{ds_id}").json()["status"] == "running"  # orphaned

            hits_at_kill = teacher.hits
            rescuer = worker("rescuer")
            _until(lambda: _row(ds_id).attempts == 2, "the rescuer to claim the stale dataset")
            _until(lambda: teacher.hits > hits_at_kill + 1, "the rescuer's teacher requests")
            assert api.get(f"/synthetic_datasets/{ds_id}").json()["status"] == "running"
            _kill(rescuer)

            worker("last")  # attempts (2) are spent: this one fails the dataset instead
            _until(lambda: _row(ds_id).status == "failed", "the dataset to fail", timeout=60)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ds = api.get(f"/synthetic_datasets/{ds_id}").json()
    assert ds["error"]["code"] == "worker_lost" and "2 times" in ds["error"]["message"]
    assert ds["training_file"] is None and ds["total_cost_usd"] == 0  # a lost run bills nothing
    assert _row(ds_id).teacher["api_key"] is None  # the customer's key is not kept past the end
