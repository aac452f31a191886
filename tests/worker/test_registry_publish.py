"""The gate and publish steps against PostgreSQL and moto S3, from a job whose export is done: the
real `gate` and `publish` stage functions run on exported files written to disk, so these tests
need no training. A failed gate stores its artifacts as `rejected` and records a failed registry
version; retries and concurrent attempts add no rows; a cancel that lands first leaves none; and
concurrent publishes of one model get versions 1..N."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from domain.job_config import JobConfig
from infra.db import session_scope
from infra.models import Artifact, Job, ModelVersion, RegisteredModel
from services.errors import EvalGateFailed
from tests.conftest import new_key
from tests.support.ledger import org_of
from worker.context import JobCancelled, JobContext


def _result(score: float, n: int = 8) -> dict[str, Any]:
    return {
        "metric": "accuracy",
        "score": score,
        "n": n,
        "ci_low": score / 2,
        "ci_high": min(score * 1.5, 1.0),
    }


def exported_job(
    root: Path, org_id: str, *, suffix: str, gate: dict[str, Any] | None = None, tuned: float = 0.75
) -> JobContext:
    """A running job whose export stage is done: one GGUF-named file per target on disk, the eval
    results the gate reads, in the job's state as the earlier stages leave it."""
    config = JobConfig.model_validate(
        {
            "model": "test/tiny-lfm2",
            "training_file": "file-x",
            "suffix": suffix,
            "targets": ["laptop-cpu", "raspberry-pi-5"],
            "gate": gate
            or {"min_delta": -1.0, "max_chance_p_value": 1.0, "max_artifact_drop": 1.0, "min_eval_rows": 0},
        }
    )
    with session_scope() as session:
        job = Job(org_id=org_id, status="running", config=config.model_dump(mode="json"), model=config.model)
        session.add(job)
        session.flush()
        job_id = job.id
    work = root / job_id
    (work / "merged").mkdir(parents=True)
    exported: dict[str, Any] = {}
    for target in config.targets:
        path = work / "export" / target / "model.gguf"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"GGUF" + os.urandom(2048))
        exported[target] = {"files": [str(path)], "eval": _result(tuned), "eval_result": _result(tuned)}
    state = {
        "merged_dir": str(work / "merged"),
        "exported": exported,
        "eval": {"metric": "accuracy", "base": _result(0.5), "fine_tuned": _result(tuned)},
        "eval_results": {"base": _result(0.5), "fine_tuned": _result(tuned)},
    }
    with session_scope() as session:
        session.get_one(Job, job_id).state = state
    return JobContext(job_id, org_id, config, work, dict(state))


def _artifacts(job_id: str) -> list[Artifact]:
    with session_scope() as session:
        return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id)))


def _versions(job_id: str) -> list[ModelVersion]:
    with session_scope() as session:
        return list(session.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id)))


@pytest.fixture()
def org(platform) -> tuple[str, str]:
    key = new_key()
    return key, org_of(key)


def test_a_failed_gate_keeps_its_artifacts_as_rejected(server, org, tmp_path) -> None:
    from worker.stages.gate import gate

    key, org_id = org
    ctx = exported_job(tmp_path, org_id, suffix="sentiment", gate={"min_score": 0.9})
    with pytest.raises(EvalGateFailed) as failed:
        gate(ctx)
    assert failed.value.code == "eval_gate_failed" and "min_score: fine-tuned" in failed.value.message
    assert "kept for inspection with status rejected" in failed.value.message

    headers = {"Authorization": f"Bearer {key}"}
    listed = server.api.get("/artifacts", params={"job_id": ctx.job_id}, headers=headers).json()["data"]
    assert sorted(a["target"] for a in listed) == ["laptop-cpu", "raspberry-pi-5"]
    assert {a["status"] for a in listed} == {"rejected"}
    for a in listed:  # each downloads whole, byte for byte what the export wrote
        body = server.api.get(f"/artifacts/{a['id']}/content", headers=headers).content
        local = Path(ctx.state["exported"][a["target"]]["files"][0]).read_bytes()
        assert body == local and hashlib.sha256(body).hexdigest() == a["sha256"]
        assert httpx.get(a["download_url"]).content == local  # the presigned URL works too
        manifest = server.api.get(f"/artifacts/{a['id']}/manifest", headers=headers).json()
        assert manifest["extra"]["status"] == "rejected"
        assert manifest["eval"]["gate"]["passed"] is False and manifest["eval"]["gate"]["reasons"]

    published = server.api.get("/artifacts", params={"status": "published"}, headers=headers).json()["data"]
    rejected = server.api.get("/artifacts", params={"status": "rejected"}, headers=headers).json()["data"]
    assert published == [] and {a["id"] for a in rejected} == {a["id"] for a in listed}
    bad = server.api.get("/artifacts", params={"status": "deleted"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"

    (version,) = _versions(ctx.job_id)
    assert (version.version, version.gate_passed, version.fine_tuned_model) == (1, False, None)
    assert sorted(version.artifact_ids) == sorted(a["id"] for a in listed)
    assert version.gate is not None and version.gate["passed"] is False
    with session_scope() as session:
        assert session.get_one(Job, ctx.job_id).fine_tuned_model is None  # not a usable model


def test_a_retried_gate_or_publish_adds_no_rows(org, tmp_path) -> None:
    from worker.stages.gate import gate
    from worker.stages.publish import publish

    _, org_id = org
    failing = exported_job(tmp_path, org_id, suffix="retry", gate={"min_score": 0.9})
    for _ in range(2):  # the worker died after the rows were committed; the stage runs again
        with pytest.raises(EvalGateFailed):
            gate(failing)
    assert len(_artifacts(failing.job_id)) == 2 and len(_versions(failing.job_id)) == 1

    passing = exported_job(tmp_path, org_id, suffix="retry")
    passing.state.update(gate(passing))  # as the pipeline merges a finished stage's outputs
    assert passing.state["gate"]["passed"]
    first, again = publish(passing), publish(passing)
    assert first == again and first["registry_version"] == 2
    assert len(_artifacts(passing.job_id)) == 2 and len(_versions(passing.job_id)) == 1
    assert {a.status for a in _artifacts(passing.job_id)} == {"published"}


def test_concurrent_attempts_of_one_publish_write_one_set_of_rows(org, tmp_path) -> None:
    from worker.stages.publish import publish

    _, org_id = org
    ctx = exported_job(tmp_path, org_id, suffix="twice")
    outcomes: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda c=c: outcomes.append(publish(c)))
        for c in (ctx, JobContext(ctx.job_id, org_id, ctx.config, ctx.work_dir, dict(ctx.state)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 2 and outcomes[0] == outcomes[1]
    assert len(_artifacts(ctx.job_id)) == 2 and len(_versions(ctx.job_id)) == 1


def test_a_cancel_that_lands_before_the_transaction_leaves_no_row(org, tmp_path) -> None:
    from infra.models import Org
    from services.jobs import cancel_job
    from worker.stages.publish import _commit, _upload_target, publish

    _, org_id = org
    ctx = exported_job(tmp_path, org_id, suffix="cancelled")
    uploaded = [_upload_target(ctx, t, e, "published") for t, e in ctx.state["exported"].items()]
    with session_scope() as session:  # the customer cancels while the bytes were uploading
        cancel_job(session=session, org=session.get_one(Org, org_id), job_id=ctx.job_id)
    with pytest.raises(JobCancelled):
        _commit(ctx, uploaded, passed=True)
    with pytest.raises(JobCancelled):
        publish(ctx)
    assert _artifacts(ctx.job_id) == [] and _versions(ctx.job_id) == []
    with session_scope() as session:
        assert session.get_one(Job, ctx.job_id).fine_tuned_model is None
        models = session.scalars(select(RegisteredModel).where(RegisteredModel.org_id == org_id)).all()
        assert models == []  # the model row was created in the rolled-back transaction


def test_concurrent_publishes_of_one_model_number_versions_1_to_n(org, tmp_path) -> None:
    from worker.stages.publish import publish

    _, org_id = org
    jobs = [exported_job(tmp_path, org_id, suffix="busy") for _ in range(5)]
    errors: list[BaseException] = []

    def run(ctx: JobContext) -> None:
        try:
            publish(ctx)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope() as session:
        numbers = session.scalars(
            select(ModelVersion.version).where(ModelVersion.job_id.in_([c.job_id for c in jobs]))
        ).all()
        model = session.scalars(select(RegisteredModel).where(RegisteredModel.org_id == org_id)).one()
        count = session.scalar(
            select(func.count()).select_from(ModelVersion).where(ModelVersion.model_id == model.id)
        )
    assert sorted(numbers) == [1, 2, 3, 4, 5] and model.latest_version == 5 and count == 5
    assert model.name == "busy"
