"""Handing a job between pools mid-run (issue 17): with compute pools a GPU job's stages that need
no accelerator run on a CPU worker (services/pools.py queue_for_stage; domain/lists.py
ACCELERATOR_STAGES says which and why), so the GPU is free while the teacher writes rows or the
exports are made and scored.

A hand-over is the same path as a takeover after a lost machine, planned: the job goes back to
`queued` (its attempt count unchanged, so hand-overs never use up the retries a lost machine
gets), and the next worker claims it, skips the stages done and re-runs those whose outputs were
local files (worker/pipeline.py). What training made cannot be re-run cheaply, so when a job leaves
a machine after training, its outputs (the merged weights, the LoRA adapter, the data split the
held-out rows came from) go to the artifact store first, and the next machine fetches them instead
of training again. They are deleted when the job ends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import update

from infra import queue
from infra.db import session_scope
from infra.models import Job, now
from services.jobs import add_event
from services.pools import waiting_note
from worker.context import JobContext, save_state
from worker.stored_trees import delete_tree, download_tree, upload_tree

log = logging.getLogger(__name__)

# The state keys whose paths the train stage leaves in the work dir and later stages read.
TRAINED = ("train_path", "eval_path", "merged_dir", "adapter_dir")


def _prefix(ctx: JobContext) -> str:
    return f"handoff/{ctx.org_id}/{ctx.job_id}"  # discard_stored spells it from the ids


# A sweep's other bases (worker/stages/train.py) keep theirs in state["other_bases"][model]; their
# keys here are "other_bases/<model>/<key>".
OTHER_BASES = "other_bases/"
OTHER_TRAINED = ("merged_dir", "adapter_dir")


def _trained_paths(ctx: JobContext) -> dict[str, str]:
    """Each trained output as a path relative to the work dir (all of them live there)."""
    values = {key: ctx.state.get(key) for key in TRAINED}
    for model, made in (ctx.state.get("other_bases") or {}).items():
        values |= {f"{OTHER_BASES}{model}/{key}": made.get(key) for key in OTHER_TRAINED}
    out: dict[str, str] = {}
    for key, value in values.items():
        if value and Path(value).is_relative_to(ctx.work_dir):
            out[key] = str(Path(value).relative_to(ctx.work_dir))
    return out


def _point_state_at(ctx: JobContext, key: str, path: Path) -> None:
    if key.startswith(OTHER_BASES):
        model, field = key.removeprefix(OTHER_BASES).rsplit("/", 1)
        ctx.state["other_bases"][model][field] = str(path)
    else:
        ctx.state[key] = str(path)


def _trees(ctx: JobContext, paths: dict[str, str]) -> list[str]:
    """The directories that hold those outputs: a model's own, a data file's parent (data/)."""
    return sorted({rel if (ctx.work_dir / rel).is_dir() else str(Path(rel).parent) for rel in paths.values()})


def store_trained(ctx: JobContext) -> None:
    """Upload the train stage's outputs, once, before the job leaves the machine that trained it."""
    merged = ctx.state.get("merged_dir")
    if ctx.state.get("handoff_stored") or not merged or not Path(merged).is_dir():
        return
    paths = _trained_paths(ctx)
    trees = _trees(ctx, paths)
    for tree in trees:
        upload_tree(f"{_prefix(ctx)}/{tree}", ctx.work_dir / tree)
    save_state(ctx, {"handoff_stored": {"paths": paths, "trees": trees}})


def restore_trained(ctx: JobContext) -> bool:
    """On a machine without the trained outputs, fetch them into this work dir and point the
    state at them; False when none were stored (the train stage must run here again)."""
    stored: dict[str, Any] = ctx.state.get("handoff_stored") or {}
    if not stored:
        return False
    for tree in stored["trees"]:
        download_tree(f"{_prefix(ctx)}/{tree}", ctx.work_dir / tree)
    for key, rel in stored["paths"].items():
        _point_state_at(ctx, key, ctx.work_dir / rel)
    ctx.event(
        "Fetched the trained model and its data from the artifact store (made on another worker)",
        data={"restored": sorted(stored["paths"])},
    )
    return True


def discard_trained(ctx: JobContext) -> None:
    """Delete the stored outputs once the job has ended (storage is billed); best effort."""
    discard_stored(ctx.org_id, ctx.job_id, ctx.state)


def discard_stored(org_id: str, job_id: str, state: dict[str, Any] | None) -> None:
    """The same, from the job row's ids and state (the reaper, when it gives a job up)."""
    for tree in ((state or {}).get("handoff_stored") or {}).get("trees", []):
        try:
            delete_tree(f"handoff/{org_id}/{job_id}/{tree}")
        except Exception:  # the job's outcome stands; a leftover prefix only costs storage
            log.exception("could not delete the hand-over copy %s of job %s", tree, job_id)


def hand_off(ctx: JobContext, stage: str, target: str) -> bool:
    """Send the job to `target` to run `stage` there. False when the job was cancelled meanwhile
    (nothing is sent). The message goes after the commit: if the broker refuses it, the job waits
    as `queued` and the reaper's lost-message rule sends it again (worker/lifecycle.py)."""
    store_trained(ctx)
    save_state(ctx, {"handoffs": int(ctx.state.get("handoffs", 0)) + 1})
    data: dict[str, Any] = {"stage": stage, "queue": target, "handoff": True}
    with session_scope() as session:
        moved = session.execute(
            update(Job)
            .where(Job.id == ctx.job_id, Job.status == "running")
            .values(
                status="queued", stage=None, heartbeat_at=None, enqueued_at=now(), attempts=Job.attempts - 1
            )
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            return False
        add_event(
            session, ctx.job_id, f"Stage {stage} runs on another pool: handed to queue {target!r}", data=data
        )
    # The job is another worker's from here: nothing below may raise into this one's pipeline.
    try:
        queue.send(queue.RUN_JOB, ctx.job_id, target)
    except Exception as exc:
        log.warning("could not hand job %s to %s (the reaper sends it again): %r", ctx.job_id, target, exc)
    try:
        if (note := waiting_note(target)) is not None:
            ctx.event(note, level="warn", data={"queue": target})
    except Exception:
        log.exception("could not note the wait of job %s on %s", ctx.job_id, target)
    return True
