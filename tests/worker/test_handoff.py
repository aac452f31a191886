"""The train stage's outputs handed to another worker through the store (worker/handoff.py),
a sweep's other bases' with them: each fetched into the new work dir and the state pointed there."""

from __future__ import annotations

from pathlib import Path

from domain.job_config import JobConfig
from infra.db import session_scope
from infra.models import Job
from tests.support.ledger import org_of
from worker.context import JobContext


def _tree(root: Path, name: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "model.safetensors").write_bytes(name.encode() * 100)
    return root / name


def test_other_bases_travel_with_the_jobs_model(api_key, tmp_path) -> None:
    from worker import handoff

    config = JobConfig.model_validate({"model": "test/a", "training_file": "file-x"})
    with session_scope() as session:
        job = Job(
            org_id=org_of(api_key), status="running", config=config.model_dump(mode="json"), model="test/a"
        )
        session.add(job)
        session.flush()
        job_id, org_id = job.id, job.org_id
    here = tmp_path / "machine-1" / job_id
    state = {
        "merged_dir": str(_tree(here, "train/merged")),
        "adapter_dir": str(_tree(here, "train/adapter")),
        "other_bases": {
            "test/b": {
                "base_model_dir": "/models/test/b",
                "merged_dir": str(_tree(here, "bases/0/train/merged")),
                "adapter_dir": None,
                "eval_results": {"fine_tuned": {"score": 0.5}},
            }
        },
    }
    handoff.store_trained(JobContext(job_id, org_id, config, here, dict(state)))
    with session_scope() as session:
        stored_state = dict(session.get_one(Job, job_id).state)
    there = tmp_path / "machine-2" / job_id
    ctx = JobContext(job_id, org_id, config, there, stored_state)
    assert handoff.restore_trained(ctx)
    other = ctx.state["other_bases"]["test/b"]
    assert other["merged_dir"] == str(there / "bases/0/train/merged")
    assert (Path(other["merged_dir"]) / "model.safetensors").read_bytes() == b"bases/0/train/merged" * 100
    assert other["adapter_dir"] is None and other["eval_results"] == {"fine_tuned": {"score": 0.5}}
    assert (Path(ctx.state["merged_dir"]) / "model.safetensors").read_bytes() == b"train/merged" * 100
    handoff.discard_trained(ctx)


def test_a_running_stage_stores_only_the_outputs_it_names(api_key, tmp_path) -> None:
    """The train stage stores each other base as it finishes (worker/stages/train.py), mid-stage:
    the held-out split it made on this machine must not be stored with it, or a takeover on
    another machine would read those paths as done."""
    from worker.context import save_outputs

    config = JobConfig.model_validate({"model": "test/a", "training_file": "file-x"})
    with session_scope() as session:
        job = Job(org_id=org_of(api_key), status="running", config=config.model_dump(mode="json"),
                  model="test/a", state={"train_path": "/data/train.jsonl"})  # fmt: skip
        session.add(job)
        session.flush()
        job_id, org_id = job.id, job.org_id
    ctx = JobContext(job_id, org_id, config, tmp_path, {"train_path": "/data/train.jsonl"})
    ctx.state |= {"train_path": "/machine-1/train_split.jsonl", "eval_path": "/machine-1/eval.jsonl"}
    save_outputs(ctx, {"other_bases": {"test/b": {"merged_dir": "/machine-1/bases/0/train/merged"}}})
    with session_scope() as session:
        stored = dict(session.get_one(Job, job_id).state)
    assert stored == {
        "train_path": "/data/train.jsonl",
        "other_bases": {"test/b": {"merged_dir": "/machine-1/bases/0/train/merged"}},
    }
    assert ctx.state["eval_path"] == "/machine-1/eval.jsonl"  # this run still reads its own split
