"""Benchmark tasks for device agents (issue 18): an artifact to measure on an agent of a profile.

A task is queued for (org, profile). An agent claims the oldest one under a lease of
settings.device_lease_s that its heartbeats extend; an agent that stops (killed, unplugged, its key
revoked) lets the lease lapse, and the task goes back to the queue for another agent of the profile,
at most settings.device_task_attempts claims in all, then fails `agent_lost`. A task no agent claims
within settings.device_task_wait_s fails `no_agent`. Lapses are applied whenever an org's tasks are
read or claimed: nothing waits on a task but its readers, so no reaper is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from domain.lists import TERMINAL
from export.device_model import Measurement
from export.manifest import sha256_file
from export.profiles import UnknownProfileError, get_profile
from infra.models import Artifact, DeviceAgent, DeviceBenchmark, Org, now
from infra.settings import get_settings
from infra.storage import get_store
from services.artifacts import get_artifact
from services.errors import Conflict, InvalidRequest, NotFound
from services.pagination import check_limit
from services.schemas.device_agents import (
    BenchmarkResult,
    BenchmarkSettings,
    BenchmarkStatus,
    BenchmarkTask,
    DeviceBenchmarkCreate,
    DeviceBenchmarkPublic,
)

log = logging.getLogger(__name__)
MEASURABLE_FORMATS = ("gguf",)  # what an agent's runtime (llama.cpp) runs
CLAIM_TRIES = 5  # queued tasks a claim tries before answering "none" (others took them first)


def to_public(task: DeviceBenchmark) -> DeviceBenchmarkPublic:
    return DeviceBenchmarkPublic(
        id=task.id,
        artifact_id=task.artifact_id,
        job_id=task.job_id,
        target=task.target,
        sha256=task.sha256,
        profile=task.profile,
        status=cast(BenchmarkStatus, task.status),
        settings=BenchmarkSettings(**task.settings),
        agent_id=task.agent_id,
        attempts=task.attempts,
        result=task.result,
        error=task.error,
        created_at=task.created_at,
        finished_at=task.finished_at,
    )


def _profile_of(artifact: Artifact, named: str | None) -> str:
    """The profile to measure for: the one named, else the artifact's target (an adapter's target
    is "<profile>-adapter", measured as its profile's)."""
    name = named or artifact.target.removesuffix("-adapter")
    try:
        get_profile(name)
    except UnknownProfileError as exc:
        raise InvalidRequest(str(exc), param="profile", code="unknown_profile") from exc
    return name


def create_benchmark(*, session: Session, org: Org, body: DeviceBenchmarkCreate) -> DeviceBenchmark:
    """POST /v1/device_benchmarks: queue one artifact for the org's agents of a profile; committed."""
    artifact = get_artifact(session=session, org=org, artifact_id=body.artifact_id)
    if artifact.format not in MEASURABLE_FORMATS:
        raise InvalidRequest(
            f"artifact {artifact.id} is {artifact.format}; agents measure {', '.join(MEASURABLE_FORMATS)}",
            param="artifact_id",
            code="not_measurable",
        )
    profile = _profile_of(artifact, body.profile)
    context = get_profile(profile).context_cap
    if body.prompt_tokens + body.decode_tokens >= context:
        raise InvalidRequest(
            f"prompt_tokens + decode_tokens must be under the profile's context ({context})",
            param="prompt_tokens",
        )
    settings = BenchmarkSettings(
        context=context, prompt_tokens=body.prompt_tokens, decode_tokens=body.decode_tokens
    )
    task = DeviceBenchmark(
        org_id=org.id, artifact_id=artifact.id, profile=profile, status="queued", attempts=0,
        settings=settings.model_dump(), filename=artifact.filename, bytes=artifact.bytes,
        sha256=artifact.sha256, storage_key=artifact.storage_key,
    )  # fmt: skip
    session.add(task)
    session.commit()
    return task


def agents_online(session: Session, org_id: str, profile: str) -> list[DeviceAgent]:
    """The org's agents of `profile` seen within settings.device_agent_online_s."""
    since = now() - get_settings().device_agent_online_s
    return list(
        session.scalars(
            select(DeviceAgent).where(
                DeviceAgent.org_id == org_id,
                DeviceAgent.profile == profile,
                DeviceAgent.revoked_at.is_(None),
                DeviceAgent.last_seen_at >= since,
            )
        )
    )


# Where a job's candidate artifacts are copied for agents to fetch: each copy belongs to its task and
# goes when the task ends (a published artifact's own file, measured on request, stays).
COPIES = "device-benchmarks/"


def release_copies(tasks: Iterable[DeviceBenchmark]) -> None:
    """Delete the store copy of each ended task that owns one. Called after the commit that ended
    them, so a failed commit never leaves a live task without its file; a delete that fails only
    leaves an orphan in the store, logged."""
    for task in tasks:
        if task.status in TERMINAL and task.storage_key.startswith(COPIES):
            try:
                get_store().delete(task.storage_key)
            except Exception:  # the task's outcome stands either way
                log.warning("could not delete %s of device benchmark %s", task.storage_key, task.id)


def queue_candidate(
    session: Session, *, org_id: str, job_id: str, target: str, path: Path, settings: BenchmarkSettings
) -> DeviceBenchmark:
    """A job's exported GGUF, stored where agents fetch it and queued for its profile's agents
    before the gate reads its budgets (worker/stages/device_figures.py); committed."""
    # by content: a sweep over bases exports a model-Q4_0.gguf of each base for the same target
    sha = sha256_file(path)
    key = f"{COPIES}{org_id}/{job_id}/{target}/{sha[:16]}/{path.name}"
    get_store().put_file(key, path)
    task = DeviceBenchmark(
        org_id=org_id, job_id=job_id, target=target, profile=target, status="queued", attempts=0,
        settings=settings.model_dump(), filename=path.name, bytes=path.stat().st_size,
        sha256=sha, storage_key=key,
    )  # fmt: skip
    session.add(task)
    session.commit()
    return task


def get_benchmark(*, session: Session, org: Org, benchmark_id: str) -> DeviceBenchmark:
    apply_lapses(session, org.id)
    task = session.get(DeviceBenchmark, benchmark_id)
    if task is None or task.org_id != org.id:
        raise NotFound(
            f"No such device benchmark: {benchmark_id!r}", param="benchmark_id", code="benchmark_not_found"
        )
    return task


def list_benchmarks(
    *, session: Session, org: Org, artifact_id: str | None, limit: int
) -> list[DeviceBenchmark]:
    check_limit(limit)
    apply_lapses(session, org.id)
    stmt = select(DeviceBenchmark).where(DeviceBenchmark.org_id == org.id)
    if artifact_id is not None:
        stmt = stmt.where(DeviceBenchmark.artifact_id == artifact_id)
    return list(session.scalars(stmt.order_by(DeviceBenchmark.created_at.desc()).limit(limit)))


def apply_lapses(session: Session, org_id: str, at: int | None = None) -> None:
    """Send back the org's tasks whose lease lapsed (or fail them past their attempts), and fail
    those no agent took in time; committed."""
    t, s = now() if at is None else at, get_settings()
    lapsed = session.scalars(
        select(DeviceBenchmark)
        .where(DeviceBenchmark.org_id == org_id)
        .where(
            or_(
                (DeviceBenchmark.status == "running") & (DeviceBenchmark.lease_expires_at < t),
                (DeviceBenchmark.status == "queued") & (DeviceBenchmark.queued_at < t - s.device_task_wait_s),
            )
        )
        .with_for_update(skip_locked=True)
    ).all()
    for task in lapsed:
        if task.status == "queued":
            waited = f"no agent of profile {task.profile!r} took it within {s.device_task_wait_s} s"
            _fail(task, "no_agent", waited, t)
        elif task.attempts >= s.device_task_attempts:
            _fail(task, "agent_lost", f"its agent stopped answering on each of {task.attempts} attempts", t)
        else:  # another agent of the profile takes it, and waits for one from now
            task.status, task.agent_id, task.lease_expires_at, task.queued_at = "queued", None, None, t
    session.commit()
    release_copies(lapsed)


def _fail(task: DeviceBenchmark, code: str, message: str, at: int) -> None:
    task.status, task.finished_at, task.lease_expires_at = "failed", at, None
    task.error = {"code": code, "message": message}


def claim(*, session: Session, agent: DeviceAgent, stream_url: str) -> BenchmarkTask | None:
    """POST /v1/device_agent/tasks/claim: the oldest queued task of the agent's org and profile,
    now the agent's under a lease; None when there is none. `stream_url` is where the API streams a
    task's file ("{id}" filled in), used when the store gives no presigned URL.

    The claim is one conditional UPDATE (status still "queued"): of two agents that read the same
    task, one gets it and the other tries the next, also where the database cannot lock rows
    (SQLite, the embedded default)."""
    apply_lapses(session, agent.org_id)
    lease = get_settings().device_lease_s
    for _ in range(CLAIM_TRIES):
        task_id = session.scalars(
            select(DeviceBenchmark.id)
            .where(DeviceBenchmark.org_id == agent.org_id, DeviceBenchmark.profile == agent.profile)
            .where(DeviceBenchmark.status == "queued")
            .order_by(DeviceBenchmark.queued_at, DeviceBenchmark.id)
            .limit(1)
        ).first()
        if task_id is None:
            return None
        taken = session.execute(
            update(DeviceBenchmark)
            .where(DeviceBenchmark.id == task_id, DeviceBenchmark.status == "queued")
            .values(
                status="running",
                agent_id=agent.id,
                attempts=DeviceBenchmark.attempts + 1,
                lease_expires_at=now() + lease,
            )
        )
        session.commit()
        if cast(CursorResult[Any], taken).rowcount == 1:
            task = session.get_one(DeviceBenchmark, task_id, populate_existing=True)
            return _task_for_agent(task, stream_url, lease)
    return None  # other agents took every task it read: it asks again after its poll interval


def _task_for_agent(task: DeviceBenchmark, stream_url: str, lease: int) -> BenchmarkTask:
    presigned = get_store().presigned_url(task.storage_key)
    return BenchmarkTask(
        id=task.id,
        artifact_id=task.artifact_id,
        filename=task.filename,
        bytes=task.bytes,
        sha256=task.sha256,
        download_url=presigned or stream_url.format(id=task.id),
        download_needs_key=presigned is None,
        settings=BenchmarkSettings(**task.settings),
        lease_expires_at=task.lease_expires_at or 0,
        heartbeat_every_s=max(1, lease // 3),
    )


def held_task(*, session: Session, agent: DeviceAgent, task_id: str) -> DeviceBenchmark:
    """A task this agent holds now. Another org's or profile's task is a 404, as if it did not
    exist; one whose lease lapsed (or that another agent took since) a 409 `lease_lost`, telling
    the agent to drop it."""
    task = session.get(DeviceBenchmark, task_id, with_for_update=True)  # against a racing lapse
    if task is None or task.org_id != agent.org_id or task.profile != agent.profile:
        raise NotFound(f"No such task: {task_id!r}", param="task_id", code="task_not_found")
    if task.status != "running" or task.agent_id != agent.id or (task.lease_expires_at or 0) < now():
        raise Conflict(f"task {task_id} is no longer this agent's (its lease lapsed)", code="lease_lost")
    return task


def heartbeat(*, session: Session, agent: DeviceAgent, task_id: str) -> DeviceBenchmark:
    task = held_task(session=session, agent=agent, task_id=task_id)
    task.lease_expires_at = now() + get_settings().device_lease_s
    session.commit()
    return task


def finish(
    *, session: Session, agent: DeviceAgent, task_id: str, result: BenchmarkResult | None, failure: str | None
) -> DeviceBenchmark:
    """The agent's measurements (succeeded), or why it could not measure (failed, not retried: an
    artifact that does not load on one device of a profile does not load on the others)."""
    task = held_task(session=session, agent=agent, task_id=task_id)
    t = now()
    if result is not None:
        measured: dict[str, Any] = result.model_dump()
        task.result = measured | {"agent_id": agent.id, "agent_name": agent.name, "device": agent.facts or {}}
        task.status, task.finished_at, task.lease_expires_at = "succeeded", t, None
    else:
        _fail(task, "measurement_failed", f"agent {agent.name}: {failure}", t)
    session.commit()
    release_copies([task])
    return task


def task_file(*, session: Session, agent: DeviceAgent, task_id: str) -> DeviceBenchmark:
    """A task the agent holds, whose file the API streams (a store without presigned URLs)."""
    return held_task(session=session, agent=agent, task_id=task_id)


def stream_file(task: DeviceBenchmark) -> Iterator[bytes]:
    return get_store().iter_range(task.storage_key, 0, task.bytes - 1)


def poll(session: Session, org_id: str, task_id: str) -> DeviceBenchmark:
    """A task's state now, lapses applied (the worker waiting on a job's candidate reads this)."""
    apply_lapses(session, org_id)
    return session.get_one(DeviceBenchmark, task_id)


def abandon(session: Session, org_id: str, task_id: str, reason: str) -> None:
    """The job stopped waiting (timed out, cancelled): a task still queued or running is failed,
    so no agent spends time on it; committed."""
    task = session.get_one(DeviceBenchmark, task_id, with_for_update=True)  # against a racing result
    if task.org_id == org_id and task.status in ("queued", "running"):
        _fail(task, "abandoned", reason, now())
    session.commit()
    release_copies([task])


def measured_at(result: dict[str, Any]) -> str:
    """Where a result's figures were taken, for budget checks: the agent and its device."""
    device = result.get("device") or {}
    cpu = device.get("cpu") or "unknown CPU"
    return (
        f"device agent {result.get('agent_name')} ({cpu}, {result.get('threads')} threads), "
        f"{result.get('runtime_version') or result.get('runtime')} with its cache allocated for context "
        f"{result.get('context')}"
    )


def calibration_points(session: Session, org_id: str, profile: str, limit: int = 50) -> list[Measurement]:
    """File bytes, decode tokens/s, and the parameters and prefill tokens/s where the agent sent
    them, of the org's latest agent measurements on `profile`: what the device model fits its
    efficiencies on (export/device_model.py). The org's own only: an agent's figures are what it
    posts, and one org's agents must not move another org's predictions."""
    rows = session.execute(
        select(DeviceBenchmark.bytes, DeviceBenchmark.result)
        .where(DeviceBenchmark.org_id == org_id, DeviceBenchmark.profile == profile)
        .where(DeviceBenchmark.status == "succeeded")
        .order_by(DeviceBenchmark.finished_at.desc())
        .limit(limit)
    ).all()
    return [
        Measurement(
            size,
            float(result["decode_tokens_per_s"]),
            result.get("model_n_params"),
            result.get("prefill_tokens_per_s"),
        )
        for size, result in rows
        if result
    ]
