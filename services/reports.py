"""A job's eval report (JSON and HTML): assembled by eval/report.py from the job's stored state
and its training-loss events, so the page always shows what the gate decided on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from eval.report import build_report, render_html
from infra.models import Job, JobEvent, Org
from services.jobs import get_job


def loss_curve(session: Session, job: Job) -> list[dict[str, float]]:
    """(step, train_loss) from the trainer's metrics events. A run resumed from a checkpoint logs
    some steps again: the newest value of a step wins, so the curve has one point per step. A
    sweep's other bases log their steps with their `model`: the curve is the job's model's."""
    events = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == "metrics").order_by(JobEvent.seq)
    )
    by_step: dict[int, float] = {}
    for e in events:
        data = e.data or {}
        if "train_loss" in data and "step" in data and "model" not in data:
            by_step[int(data["step"])] = float(data["train_loss"])
    return [{"step": step, "train_loss": loss} for step, loss in sorted(by_step.items())]


def job_report(*, session: Session, org: Org, job_id: str) -> dict[str, Any]:
    job = get_job(session=session, org=org, job_id=job_id)
    # the gate's policy as stored with the job (every field filled in), for the probe's allowed drop
    policy = (job.config or {}).get("gate") or {}
    summary = {
        "id": job.id,
        "model": job.model,
        "status": job.status,
        "error": job.error,
        "max_probe_drop": policy.get("max_probe_drop"),
    }
    return build_report(summary, job.state or {}, loss_curve(session, job))


def job_report_html(*, session: Session, org: Org, job_id: str) -> str:
    return render_html(job_report(session=session, org=org, job_id=job_id))
