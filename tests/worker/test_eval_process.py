"""The evaluate stage in a process of its own (worker/eval_process.py), as it runs on a GPU worker:
on the CPU it gives exactly the scores the in-process stage gives, a crash fails the job with
`evaluation_failed` and the end of its log, and a cancel ends the process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

import eval.probe
from domain.job_config import JobConfig
from eval.probe import load_probe
from infra.db import session_scope
from infra.models import JobEvent
from recipes.chat_data import TEMPLATES_DIR
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import Platform, new_key
from tests.support.ledger import new_job, org_of
from tests.support.tiny_lfm2 import build_tiny_lfm2
from worker.context import JobCancelled, JobContext
from worker.eval_process import EvaluationFailed, score_models_in_child
from worker.stages.evaluate import eval_rows, evaluate


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny LFM2 (other weights) standing in for the fine-tuned model."""
    template = (TEMPLATES_DIR / "lfm2.jinja").read_text()
    return build_tiny_lfm2(tmp_path_factory.mktemp("tuned") / "tiny-lfm2-b", template, seed=1)


def _context(platform: Platform, tiny_base: str, tuned: Path, tmp_path: Path) -> JobContext:
    (tmp_path / "eval.jsonl").write_bytes(jsonl(sentiment_rows(6)))
    (tmp_path / "train.jsonl").write_bytes(jsonl(sentiment_rows(8)))  # the prompted base's examples
    job_id = new_job(org_of(new_key()))  # a running job: nothing cancelled it
    state = {
        "device": "cpu",
        "base_model_dir": str(platform.models_dir / tiny_base),
        "merged_dir": str(tuned),
        "eval_path": str(tmp_path / "eval.jsonl"),
        "train_path": str(tmp_path / "train.jsonl"),
    }
    config = JobConfig.model_validate({"model": tiny_base, "training_file": "file-x"})
    return JobContext(job_id, "org", config, tmp_path / "work", state)


def _events(job_id: str) -> list[JobEvent]:
    with session_scope() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
        session.expunge_all()
        return list(events)


def test_the_evaluation_process_scores_as_the_stage_does_in_process(
    platform: Platform, tiny_base: str, tuned_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six probe items keep it short; the stage hands them to the process in its spec."""
    items = load_probe()[:6]
    monkeypatch.setattr(eval.probe, "load_probe", lambda: items)
    ctx = _context(platform, tiny_base, tuned_dir, tmp_path)
    in_process = evaluate(ctx, in_child=False)
    in_child = evaluate(ctx, in_child=True)
    assert in_child == in_process
    assert set(in_child["eval_results"]) == {
        "base",
        "base_prompted",  # given the training rows as examples, in the child as in process
        "fine_tuned",
        "probe_base",
        "probe_fine_tuned",
    }
    assert in_child["eval"]["base_prompted"]["shots"] >= 1
    assert in_child["eval"]["probe"]["n"] == len(items)
    started = [e for e in _events(ctx.job_id) if e.data and "eval_pid" in e.data]
    assert len(started) == 1 and started[0].message.startswith("Evaluating in process ")
    assert (ctx.work_dir / "eval-process" / "eval.log").exists()


def test_a_crashing_evaluation_process_fails_the_job_with_its_log(
    platform: Platform, tiny_base: str, tuned_dir: Path, tmp_path: Path
) -> None:
    ctx = _context(platform, tiny_base, tuned_dir, tmp_path)
    broken = tmp_path / "broken-base"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    ctx.state["base_model_dir"] = str(broken)
    with pytest.raises(EvaluationFailed) as raised:
        evaluate(ctx, in_child=True)
    err = raised.value
    assert err.code == "evaluation_failed" and err.param is None
    assert err.message.startswith("the evaluation process exited with code 1; the end of its log (")
    log = ctx.work_dir / "eval-process" / "eval.log"
    assert str(log) in err.message and "Traceback" in log.read_text()


def test_a_stop_ends_the_evaluation_process(
    platform: Platform, tiny_base: str, tuned_dir: Path, tmp_path: Path
) -> None:
    ctx = _context(platform, tiny_base, tuned_dir, tmp_path)
    base, tuned = Path(ctx.state["base_model_dir"]), Path(ctx.state["merged_dir"])
    with pytest.raises(JobCancelled):
        score_models_in_child(ctx, base, tuned, eval_rows(ctx), load_probe(), "cpu", JobCancelled, poll_s=0.1)
    pid = next(e.data["eval_pid"] for e in _events(ctx.job_id) if e.data and "eval_pid" in e.data)
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists()  # ended and reaped by the stage
