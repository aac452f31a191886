"""Measured, not assumed (issue 18 item 2): with an agent of the target's profile online, a job's
export is measured on it before the gate and the memory and speed budgets read those figures,
labelled with the device; with none answering in time the host's stand, and the events say so."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from domain.chat_rows import to_jsonl
from domain.job_config import JobConfig
from export.profiles import get_profile
from infra.db import session_scope
from infra.models import DeviceBenchmark, Job, JobEvent
from infra.settings import get_settings
from infra.storage import get_store
from tests.api.helpers import sentiment_rows
from tests.conftest import _reset_caches
from tests.support.ledger import org_of

pytestmark = pytest.mark.slow
TARGET = "raspberry-pi-5"


def _export_job(api_key: str, model: str, tmp_path: Path) -> str:
    """A job at its export stage: the tiny base as the "fine-tuned" model, held-out rows in place."""
    (tmp_path / "eval.jsonl").write_bytes(to_jsonl(sentiment_rows(6)))
    (tmp_path / "train.jsonl").write_bytes(to_jsonl(sentiment_rows(12)))
    config = JobConfig.model_validate({"model": model, "training_file": "file-x", "targets": [TARGET]})
    state = {
        "device": "cpu",
        "merged_dir": str(get_settings().models_dir / model),
        "base_model_dir": str(get_settings().models_dir / model),
        "eval_path": str(tmp_path / "eval.jsonl"),
        "train_path": str(tmp_path / "train.jsonl"),
    }
    with session_scope() as session:
        job = Job(
            org_id=org_of(api_key), status="queued", config=config.model_dump(mode="json"),
            model=config.model, state=state,
        )  # fmt: skip
        session.add(job)
        session.flush()
        return job.id


def _run_export(job_id: str) -> tuple[dict[str, Any], list[JobEvent]]:
    from worker.pipeline import run_job
    from worker.stages.export import export

    run_job(job_id, stages=[("export", export)])
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        assert job.error is None, job.error
        events = list(
            session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq))
        )
        session.expunge_all()
        return dict(job.state), events


def _stored(key: str) -> bool:
    try:
        get_store().size(key)
    except Exception:  # missing: FileNotFoundError locally, botocore's ClientError on S3
        return False
    return True


def _budgets(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["budget"]: b for b in state["exported"][TARGET]["budgets"]}


@contextmanager
def running_agent(server, api_key: str, name: str, profile: str, threads: int) -> Iterator[dict[str, str]]:
    """A real `edgetune device-agent` process for `profile`, online before this returns."""
    org = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    made = org.post("/device_agents", json={"name": name, "profile": profile}).json()
    cmd = [sys.executable, "-m", "cli.main", "device-agent", "--profile", profile, "--api", server.base_url]
    proc = subprocess.Popen([*cmd, "--key", made["key"], "--threads", str(threads), "--poll", "0.5"])
    try:
        deadline = time.monotonic() + 60
        while not next(a for a in org.get("/device_agents").json()["data"] if a["id"] == made["id"])[
            "online"
        ]:
            assert time.monotonic() < deadline and proc.poll() is None, "the agent never came online"
            time.sleep(0.5)
        yield made
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture()
def agent(server, api_key) -> Iterator[dict[str, str]]:
    with running_agent(server, api_key, "pi-bench", TARGET, threads=1) as made:
        yield made


def test_an_online_agent_measures_the_export_and_the_gate_reads_its_figures(
    agent, api_key, tiny_base, tmp_path
) -> None:
    job_id = _export_job(api_key, tiny_base, tmp_path)
    state, events = _run_export(job_id)
    entry = state["exported"][TARGET]
    device = entry["device_stats"]
    assert device["agent_id"] == agent["id"] and device["threads"] == 1 and device["decode_tokens_per_s"] > 0
    budgets = _budgets(state)
    speed = budgets["min_decode_tokens_per_s"]
    assert speed["measured"] == device["decode_tokens_per_s"]
    assert speed["where"].startswith("device agent pi-bench (")
    # measured at the context the host scored it at (the profile's cap, or the model's if shorter)
    assert speed["where"].endswith(f"context {entry['runtime_stats']['context']}")
    assert budgets["max_ram_mb"]["where"] == speed["where"]
    # the host figures are still recorded beside them, labelled with the host
    assert entry["runtime_stats"]["measured_at"].startswith("host ")
    assert any(e.message.startswith(f"Measuring {TARGET} on the device") for e in events)
    # the device model's prediction beside the measurement, with how far off it was
    predicted = entry["device_prediction"]
    assert predicted["decode_tokens_per_s"] > 0 and "GB/s nominal" in predicted["basis"]
    miss = predicted["decode_tokens_per_s"] / device["decode_tokens_per_s"] - 1
    assert predicted["error_vs_measured"] == pytest.approx(miss, abs=1e-3)
    # prefill from the profile's compute and the GGUF's parameters, the agent reporting the same count
    # (the worker reads the count from the GGUF, the agent from llama.cpp: the same number)
    eff, gops = predicted["calibration"]["prefill_efficiency"], get_profile(TARGET).compute_gops
    assert gops and device["model_n_params"] > 0 and "GOPS nominal" in predicted["prefill_basis"]
    expected = eff * gops * 1e9 / (2 * device["model_n_params"])
    assert predicted["prefill_tokens_per_s"] == pytest.approx(expected, rel=1e-3)
    miss = predicted["prefill_tokens_per_s"] / device["prefill_tokens_per_s"] - 1
    assert predicted["prefill_error_vs_measured"] == pytest.approx(miss, abs=1e-3)
    exported = next(e for e in events if e.message.startswith(f"Exported {TARGET}"))
    assert exported.data["device_stats"]["agent_name"] == "pi-bench"
    with session_scope() as session:
        task = session.scalars(select(DeviceBenchmark).where(DeviceBenchmark.job_id == job_id)).one()
        assert task.status == "succeeded" and task.target == TARGET and task.artifact_id is None
        # the candidate's copy for the agent went with the task: the store keeps published files only
        assert task.storage_key.startswith("device-benchmarks/") and not _stored(task.storage_key)


def test_without_an_answer_in_time_the_host_figures_stand(server, api_key, tiny_base, tmp_path) -> None:
    """An agent says hello (online) and then never claims: the export waits its bound, falls back
    to the host's figures with a warning, and the task is withdrawn so no agent spends time on it."""
    org = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    key = org.post("/device_agents", json={"name": "silent", "profile": TARGET}).json()["key"]
    silent = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert (
        silent.post("/device_agent/hello", json={"profile": TARGET, "runtime": "llama.cpp"}).status_code
        == 200
    )
    os.environ["EDGETUNE_DEVICE_MEASURE_WAIT_S"] = "3"
    _reset_caches()
    try:
        job_id = _export_job(api_key, tiny_base, tmp_path)
        state, events = _run_export(job_id)
    finally:
        os.environ.pop("EDGETUNE_DEVICE_MEASURE_WAIT_S")
        _reset_caches()
    assert "device_stats" not in state["exported"][TARGET]
    predicted = state["exported"][TARGET]["device_prediction"]  # the model's figures, unmeasured
    assert predicted["decode_tokens_per_s"] > 0 and "error_vs_measured" not in predicted
    assert _budgets(state)["min_decode_tokens_per_s"]["where"].startswith("host ")
    warn = next(e for e in events if e.message.startswith(f"No device figures for {TARGET}"))
    assert warn.level == "warn" and "budgets use the host's" in warn.message
    with session_scope() as session:
        task = session.scalars(select(DeviceBenchmark).where(DeviceBenchmark.job_id == job_id)).one()
        assert task.status == "failed" and task.error["code"] == "abandoned"
        assert not _stored(task.storage_key)
    assert silent.post("/device_agent/tasks/claim").status_code == 204
