"""Synthesize: rows from the task spec by the teacher, billed per token, stored with the job."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from domain.chat_rows import to_jsonl
from infra.db import session_scope
from infra.models import Job, Org
from infra.price_book import price_book
from services.errors import InsufficientData
from worker.context import JobContext

if TYPE_CHECKING:
    from synth.teacher import TeacherClient
from worker.stages.common import download_file


def _teacher(ctx: JobContext) -> AbstractContextManager[TeacherClient]:
    """The server's teacher (EDGETUNE_TEACHER_*, else the bundled SmolLM2 on llama.cpp), its cost
    capped at what the job's budget_usd leaves: the run stops at the cap instead of overshooting."""
    from services.schemas.synthetic_datasets import TeacherOptions
    from services.synthetic_datasets import open_teacher

    max_cost = None
    if ctx.config.budget_usd is not None:
        with session_scope() as session:
            job = session.get(Job, ctx.job_id)
            spent = float(job.total_cost_usd or 0.0) if job else 0.0
        max_cost = max(ctx.config.budget_usd - spent, 1e-9)
    return open_teacher(TeacherOptions(max_cost_usd=max_cost), notify=ctx.event)


def _store_rows(ctx: JobContext, rows: list[dict[str, Any]], name: str) -> str:
    """Save generated rows as a file of the org (the dataset API's store_rows) and list it in the
    job's result_files."""
    from services.synthetic_datasets import store_rows

    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        org = session.get(Org, job.org_id)
        assert org is not None
        f = store_rows(session, org, rows, f"{ctx.job_id}-{name}.jsonl")
        job.result_files = [*(job.result_files or []), f.id]
        return f.id


def synthesize(ctx: JobContext) -> dict[str, Any]:
    """A job with a task and no training file: the same synthesis as POST /v1/synthetic_datasets,
    holding out what the job's gate needs. Each round is an event (kept against asked); a set
    below its floor (synth/floor.py) ends the job `insufficient_data` before training, billed only
    for the teacher's tokens, with what was kept stored for the customer to read."""
    if ctx.config.training_file or ctx.config.task is None:
        return {}
    if stored := ctx.state.get("synth_files"):  # made by an earlier attempt, on a lost machine
        data = ctx.work_dir / "data"
        return {
            "train_path": str(download_file(stored["train"], data / "train.jsonl")),
            "eval_path": str(download_file(stored["eval"], data / "eval.jsonl")),
        }
    from synth.generate import synthesize as run_synth

    with _teacher(ctx) as client:
        result = run_synth(
            ctx.config.task,
            client,
            seed=ctx.config.seed,
            should_stop=ctx.cancelled,
            on_round=lambda r: _round_event(ctx, r),
            min_eval_rows=ctx.config.gate.min_eval_rows,
        )
    ctx.check_cancel()
    _bill_teacher(ctx, result.usage.total_tokens)
    files = {
        name: _store_rows(ctx, rows, name)
        for name, rows in (("train", result.train_rows), ("eval", result.eval_rows))
        if rows
    }
    report = result.report
    if report["short"]:
        ctx.event(
            "Synthesis ended short of its floor", level="error", data={"report": report, "files": files}
        )
        raise _insufficient(report)
    data = ctx.work_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_bytes(to_jsonl(result.train_rows))
    (data / "eval.jsonl").write_bytes(to_jsonl(result.eval_rows))
    ctx.event(
        f"Synthesized {report['kept']} of {report['asked']} rows asked: {report['train']} training and "
        f"{report['eval']} held out",
        type="metrics",
        data={"report": report, "teacher_tokens": result.usage.total_tokens, "files": files},
    )
    if trip := report.get("round_trip"):
        _tell_round_trip(ctx, trip)
    return {
        "train_path": str(data / "train.jsonl"),
        "eval_path": str(data / "eval.jsonl"),
        "synth_report": report,
        "synth_files": files,
    }


def _round_event(ctx: JobContext, r: dict[str, Any]) -> None:
    steer = f"; steered against {r['steered_against']}" if r["steered_against"] else ""
    ctx.event(
        f"Synthesis round {r['round']}: {r['kept_total']} of {r['asked']} rows kept "
        f"(+{r['kept']} from {r['requested']} requests; top drop reasons: {r['top_drop_reasons']}{steer})",
        data={"synthesis_round": r},
    )


def _bill_teacher(ctx: JobContext, tokens: int) -> None:
    from services.jobs import record_usage

    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        record_usage(
            session,
            job,
            stage="synthesize",
            unit="teacher_1k_tokens",
            quantity=tokens / 1000,
            unit_price=price_book().teacher_1k_tokens,
        )


def _insufficient(report: dict[str, Any]) -> InsufficientData:
    from synth.floor import top_drop_reasons

    dropped = sum(report["dropped_by_reason"].values())
    return InsufficientData(
        f"synthesis kept {report['kept']} of the {report['asked']} rows asked ({report['generated']} "
        f"generated, {dropped} dropped; top drop reasons: {top_drop_reasons(report['dropped_by_reason'])}; "
        f"stopped: {report['stopped'] or 'no'}): {'; '.join(report['short'])}. Nothing was trained or "
        "published; the teacher's tokens and the preparation were billed, no training. Describe the "
        "task more concretely, add seed examples, use a stronger teacher, or upload a training file",
        details={
            k: report[k] for k in ("asked", "kept", "train", "eval", "dropped_by_reason", "floor", "short")
        },
    )


def _tell_round_trip(ctx: JobContext, trip: dict[str, Any]) -> None:
    """The round trip's agreement as an event, a warning when the teacher did no better than a
    guess (synth/generate.py says when): the customer reads it before trusting the held-out score."""
    if not trip.get("checked"):
        return
    said = f"The teacher answered its own rows as written for {trip['agreed']} of {trip['checked']}"
    if "chance_rate" in trip:
        said += f" (guessing would agree with {trip['chance_rate']:.0%})"
    if seeds := trip.get("seeds"):
        said += f", and your own examples for {seeds['agreed']} of {seeds['checked']}"
    note = trip.get("note")
    ctx.event(
        said + (f": {note}" if note else ""), level="warn" if note else "info", data={"round_trip": trip}
    )
