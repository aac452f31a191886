"""Training checkpoints in the artifact store, so a job survives the loss of its machine.

The trainer writes `checkpoint-<step>/` under the job's work dir every `EDGETUNE_CHECKPOINT_STEPS`
steps; the callback copies each one to `checkpoints/<org>/<job>/step-<step>/` and only then records
its row, so a row always names a complete stored checkpoint. A worker that takes the job over on
another machine (no work dir) downloads the newest one before training and the trainer resumes
from it: adapter or weights, optimizer, scheduler and RNG state, as on the original machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from infra.storage import get_store

INDEX = "files.json"  # written after every file: a prefix without it is an unfinished upload
KEEP = 2  # stored checkpoints per job, as the trainer's save_total_limit keeps locally


def prefix(org_id: str, job_id: str, step: int) -> str:
    return f"checkpoints/{org_id}/{job_id}/step-{step:08d}"


def upload(org_id: str, job_id: str, checkpoint: Path, step: int) -> str:
    """Copy one checkpoint directory to the store; returns its prefix."""
    store, where = get_store(), prefix(org_id, job_id, step)
    names = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file())
    for name in names:
        store.put_file(f"{where}/{name}", checkpoint / name)
    store.put_bytes(f"{where}/{INDEX}", json.dumps(names).encode())
    return where


def download(org_id: str, job_id: str, step: int, checkpoints_dir: Path) -> Path:
    """The stored checkpoint of `step` as `checkpoints_dir/checkpoint-<step>`, the trainer's layout.
    Files land in a scratch directory renamed at the end, so a download cut short is never taken
    for a checkpoint."""
    store, where = get_store(), prefix(org_id, job_id, step)
    names = json.loads(store.get_bytes(f"{where}/{INDEX}"))
    final, partial = checkpoints_dir / f"checkpoint-{step}", checkpoints_dir / f".partial-{step}"
    shutil.rmtree(partial, ignore_errors=True)
    for name in names:
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        store.download(f"{where}/{name}", partial / name)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def prune(org_id: str, job_id: str, steps: list[int]) -> None:
    """Delete stored checkpoints older than the newest KEEP of `steps` (storage is billed)."""
    store = get_store()
    for step in sorted(steps)[:-KEEP]:
        where = prefix(org_id, job_id, step)
        try:
            names = json.loads(store.get_bytes(f"{where}/{INDEX}"))
        except Exception:
            continue  # already pruned, or never finished uploading
        store.delete(f"{where}/{INDEX}")  # first: the checkpoint stops counting as complete
        for name in names:
            store.delete(f"{where}/{name}")
