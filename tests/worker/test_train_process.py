"""Training runs in a process of its own (worker/train_process.py): a cancel ends that process
within seconds on a real worker, a worker killed outright takes it down too, and a process that
crashes fails the job with `training_failed` and the end of its log."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select

from domain.job_config import JobConfig
from infra.db import session_scope
from infra.models import Job, JobEvent
from infra.settings import get_settings
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import _reset_caches, new_key, running_worker, start_worker
from tests.support.ledger import org_of
from tests.worker.test_end_to_end import wait_event

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _train_pid(client: openai.OpenAI, job_id: str, timeout: float = 300) -> int:
    """The training process's pid, once it is training (its first loss is logged)."""
    wait_event(client, job_id, "training loss", timeout=timeout)
    events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
    return int(next(e.data["train_pid"] for e in events if e.data and "train_pid" in e.data))


def _long_job(client: openai.OpenAI, model: str) -> str:
    train = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(48)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=model,
        training_file=train.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50, "batch_size": 2}}},
    )
    return job.id


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


@pytest.fixture()
def worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    """A worker for one test: the next test's own worker must be the only one on the queue."""
    with running_worker({}, platform.var_dir / "worker-train-process.log") as proc:
        yield proc


def test_cancel_ends_the_training_process_at_once(client, worker, tiny_base) -> None:
    job_id = _long_job(client, tiny_base)
    pid = _train_pid(client, job_id)
    assert pid != worker.pid and _alive(pid)
    client.fine_tuning.jobs.cancel(job_id)
    cancelled = time.monotonic()
    # the stage polls about once a second and SIGTERMs the process group
    assert _gone_within(pid, 5), "the training process outlived the cancel"
    print(f"training process gone {time.monotonic() - cancelled:.1f}s after the cancel")
    wait_event(client, job_id, "Worker stopped the job at stage train", timeout=30)
    assert client.fine_tuning.jobs.retrieve(job_id).status == "cancelled"
    assert worker.poll() is None  # the worker lives on for the next job


def test_a_training_process_killed_from_outside_fails_the_job(client, worker, tiny_base) -> None:
    """As the kernel's out-of-memory killer would: the worker lives on, the job fails naming it."""
    job_id = _long_job(client, tiny_base)
    os.kill(_train_pid(client, job_id), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status == "running":
        assert time.monotonic() < deadline, "the job did not fail"
        time.sleep(0.5)
    assert job.status == "failed" and job.error.code == "training_failed", job.error
    assert job.error.message.startswith("the training process was killed by SIGKILL (e.g. out of memory)")
    assert worker.poll() is None


def test_a_killed_worker_takes_its_training_process_down(client, platform, tiny_base) -> None:
    """SIGKILL leaves the worker no chance to end its child: the kernel's parent-death signal does."""
    victim = start_worker({}, platform.var_dir / "worker-killed.log")
    try:
        job_id = _long_job(client, tiny_base)
        pid = _train_pid(client, job_id)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert _gone_within(pid, 5), "the training process outlived its worker"
    finally:
        if victim.poll() is None:
            victim.kill()
    client.fine_tuning.jobs.cancel(job_id)  # or the next worker to start would take it over


def _job_at_train(model: str, tmp_path: Path, extra: dict[str, Any] | None = None, **state: Any) -> str:
    """A queued job whose data is in place, for `run_job(job_id, stages=[("train", train)])`."""
    (tmp_path / "train.jsonl").write_bytes(jsonl(sentiment_rows(12)))
    (tmp_path / "eval.jsonl").write_bytes(jsonl(sentiment_rows(4)))
    config = JobConfig.model_validate(
        {"model": model, "training_file": "file-x", "method": {"type": "supervised", "supervised": {
            "hyperparameters": {"n_epochs": 2, "batch_size": 4}}}} | (extra or {})
    )  # fmt: skip
    state = {
        "device": "cpu",
        "base_model_dir": str(get_settings().models_dir / model),
        "train_path": str(tmp_path / "train.jsonl"),
        "eval_path": str(tmp_path / "eval.jsonl"),
    } | state
    with session_scope() as session:
        job = Job(
            org_id=org_of(new_key()),
            status="queued",
            config=config.model_dump(mode="json"),
            model=config.model,
            state=state,
        )
        session.add(job)
        session.flush()
        return job.id


def _events(job_id: str) -> list[JobEvent]:
    with session_scope() as session:
        rows = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))
        session.expunge_all()
        return rows


def test_a_crashing_training_process_fails_the_job_with_its_log(platform, tiny_base, tmp_path) -> None:
    """A base whose config.json is not JSON: the child dies loading it, and the job fails with the
    code and the traceback's last line, the rest kept in the job's work dir."""
    from worker.pipeline import run_job
    from worker.stages.train import train

    broken = tmp_path / "broken-base"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    job_id = _job_at_train(tiny_base, tmp_path, base_model_dir=str(broken))

    run_job(job_id, stages=[("train", train)])

    with session_scope() as session:
        job = session.get_one(Job, job_id)
        status, error, work_dir = job.status, job.error, get_settings().work_dir / job.id
    assert status == "failed" and error["code"] == "training_failed" and error["param"] is None
    message = error["message"]
    assert message.startswith("the training process exited with code 1; the end of its log (")
    log = work_dir / "train-process" / "train.log"
    assert str(log) in message and "Traceback" in log.read_text()
    last_line = log.read_text().strip().splitlines()[-1]
    assert message.rstrip().endswith(last_line)


@pytest.fixture()
def two_gpu_worker(monkeypatch) -> Iterator[None]:
    """This process as a worker that holds 2 devices (EDGETUNE_WORKER_GPUS, infra/settings.py)."""
    monkeypatch.setenv("EDGETUNE_WORKER_GPUS", "2")
    _reset_caches()
    yield
    monkeypatch.delenv("EDGETUNE_WORKER_GPUS")
    _reset_caches()


def test_a_job_planned_on_two_gpus_trains_as_two_processes(
    platform, tiny_base, tmp_path, two_gpu_worker
) -> None:
    """A job whose plan gave it 2 GPUs (state "gpus") runs its recipe as 2 ranks launched by the
    training process (recipes/distributed.py; DDP over gloo on this CPU box): one "Training in
    process" event, each logged step once (rank 0 reports alone), the steps of a 2-rank batch split,
    and a merged model saved once."""
    from worker.pipeline import run_job
    from worker.stages.train import train

    # the held-out selection on 3 evaluations (steps 2, 4, 6), never stopping early
    best = {"checkpoints": {"select": "best", "evals": 3, "patience": 0}}
    job_id = _job_at_train(tiny_base, tmp_path, best, gpus=2)
    run_job(job_id, stages=[("train", train)])

    with session_scope() as session:
        job = session.get_one(Job, job_id)
        status, error = job.status, job.error
    assert error is None and status != "failed", error
    events = _events(job_id)
    assert sum(e.message.startswith("Training in process") for e in events) == 1
    steps = [e.data["step"] for e in events if e.data and "train_loss" in e.data and "step" in e.data]
    assert steps and len(steps) == len(set(steps)), steps
    finished = next(e for e in events if e.message.startswith("Training finished"))
    plan = finished.data["speed_plan"]
    assert plan["processes"] == 2 and plan["sharded"] is False  # CPU ranks run DDP
    assert "2 processes (DDP) on cpu" in finished.message
    # 12 rows less none held out, 2 epochs, batch 4 split 2 + 2 across the ranks: 3 steps an epoch
    assert finished.data["steps"] == 6
    # data-parallel ranks each hold the whole model: rank 0 scored it, every rank took its choice
    selection = finished.data["checkpoint_selection"]
    assert [step for step, _ in selection["history"]] == [2, 4, 6]
    assert selection["best_step"] in (2, 4, 6) and not selection["stopped_early"]
    assert not any("ships its last checkpoint" in e.message for e in events)
    merged = get_settings().work_dir / job_id / "train" / "merged"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))


def test_a_job_planned_on_more_gpus_than_its_worker_holds_fails_clearly(
    platform, tiny_base, tmp_path
) -> None:
    from worker.pipeline import run_job
    from worker.stages.train import train

    job_id = _job_at_train(tiny_base, tmp_path, gpus=4)
    run_job(job_id, stages=[("train", train)])
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        status, error = job.status, job.error
    assert status == "failed" and error["code"] == "not_enough_gpus", error
    assert "4" in error["message"] and "1" in error["message"]
