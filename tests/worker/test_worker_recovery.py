"""A worker SIGKILLed mid-training must not leave its job running forever: another worker takes
it over and training continues from the last checkpoint. Runs after test_end_to_end's shared
worker has stopped, so the victim worker is the only consumer."""

from __future__ import annotations

import io
import os
import signal
import time

import openai
import pytest

from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import start_worker
from tests.worker.test_end_to_end import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


def _kill_mid_training_then_rescue(client, platform, tiny_base, rescuer_env: dict[str, str]):
    """SIGKILL the only worker once a checkpoint is listed; a second worker takes the job over.
    Returns (the finished job, its events, the newest checkpoint step at the kill)."""
    env = {
        "EDGETUNE_CHECKPOINT_STEPS": "5",
        "EDGETUNE_JOB_STALE_AFTER_S": "6",
        "EDGETUNE_JOB_HEARTBEAT_S": "1",
    }
    victim = start_worker(env, platform.var_dir / "victim.log")
    try:
        train = client.files.create(
            file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(48)))), purpose="fine-tune"
        )
        job = client.fine_tuning.jobs.create(
            model=tiny_base,
            training_file=train.id,
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 2}},
            },
            # about recovery, not quality: the tiny base's 0.40 on 20 rows cannot beat a guess
            extra_body={"gate": {"max_chance_p_value": 1.0}},
        )
        deadline = time.monotonic() + 300
        while not client.fine_tuning.jobs.checkpoints.list(job.id).data:
            assert time.monotonic() < deadline, "no checkpoint before the kill"
            time.sleep(0.5)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # orphaned
        first_ckpt = max(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data)
        rescuer = start_worker({**env, **rescuer_env}, platform.var_dir / "rescuer.log")
        try:
            done = wait_for(client, job.id, ("succeeded",))
        finally:
            rescuer.terminate()
            rescuer.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    return done, list(client.fine_tuning.jobs.list_events(job.id, limit=100)), first_ckpt


def _assert_continued(done, events, first_ckpt: int) -> None:
    assert any("Worker lost" in e.message for e in events)
    assert any("resuming" in e.message.lower() for e in events)
    steps = sorted({e.data["step"] for e in events if e.type == "metrics" and e.data and "step" in e.data})
    # after the takeover, logged steps continue past the checkpoint instead of restarting from 1
    resumed = [e for e in events if e.type == "metrics" and e.data and "resumed_from_step" in e.data]
    assert resumed and resumed[0].data["resumed_from_step"] >= first_ckpt > 0
    assert done.status == "succeeded" and steps[-1] > first_ckpt


def test_killed_worker_job_resumes_from_checkpoint(client, platform, tiny_base) -> None:
    """The rescuer runs on the same machine: the checkpoint is still in the work dir."""
    done, events, first_ckpt = _kill_mid_training_then_rescue(client, platform, tiny_base, {})
    _assert_continued(done, events, first_ckpt)
    assert not any("artifact store" in e.message for e in events)  # nothing needed fetching


def test_job_resumes_on_another_machine_from_the_stored_checkpoint(
    client, platform, tiny_base, tmp_path
) -> None:
    """The rescuer has a var dir of its own, as a new machine would: no work dir, no checkpoint on
    disk. The job re-runs prepare, fetches the checkpoint from the artifact store (S3 on moto) and
    training continues from it."""
    fresh = {"EDGETUNE_VAR_DIR": str(tmp_path / "other-machine")}
    done, events, first_ckpt = _kill_mid_training_then_rescue(client, platform, tiny_base, fresh)
    _assert_continued(done, events, first_ckpt)
    rerun = next(e for e in events if e.data and "rerun_stages" in e.data)
    assert rerun.data["rerun_stages"] == ["prepare", "synthesize"]  # train had not finished
    fetched = [e for e in events if e.data and "checkpoint_step" in e.data]
    assert fetched and fetched[0].data["checkpoint_step"] >= first_ckpt
    assert (tmp_path / "other-machine" / "work" / done.id).is_dir()  # it trained over there
