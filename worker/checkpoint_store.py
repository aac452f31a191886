"""Training checkpoints in the artifact store, so a job survives the loss of its machine.

The trainer writes `checkpoint-<step>/` under the job's work dir every `EDGETUNE_CHECKPOINT_STEPS`
steps; the callback copies each one to `checkpoints/<org>/<job>/step-<step>/` and only then records
its row, so a row always names a complete stored checkpoint. A worker that takes the job over on
another machine (no work dir) downloads the newest one before training and the trainer resumes
from it: adapter or weights, optimizer, scheduler and RNG state, as on the original machine.
"""

from __future__ import annotations

from pathlib import Path

from worker.stored_trees import delete_tree, download_tree, upload_tree

KEEP = 2  # stored checkpoints per job, as the trainer's save_total_limit keeps locally


def prefix(org_id: str, job_id: str, step: int) -> str:
    return f"checkpoints/{org_id}/{job_id}/step-{step:08d}"


def upload(org_id: str, job_id: str, checkpoint: Path, step: int) -> str:
    """Copy one checkpoint directory to the store; returns its prefix."""
    where = prefix(org_id, job_id, step)
    upload_tree(where, checkpoint)
    return where


def download(org_id: str, job_id: str, step: int, checkpoints_dir: Path) -> Path:
    """The stored checkpoint of `step` as `checkpoints_dir/checkpoint-<step>`, the trainer's layout
    (a download cut short is never taken for a checkpoint: worker/stored_trees.py)."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    return download_tree(prefix(org_id, job_id, step), checkpoints_dir / f"checkpoint-{step}")


def prune(org_id: str, job_id: str, steps: list[int]) -> None:
    """Delete stored checkpoints older than the newest KEEP of `steps` (storage is billed)."""
    for step in sorted(steps)[:-KEEP]:
        delete_tree(prefix(org_id, job_id, step))
