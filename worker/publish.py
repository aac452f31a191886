"""Publish: bytes into the artifact store first, then one transaction that re-checks the job is
still running and writes the artifact rows. A cancel that lands first leaves no row behind."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from sqlalchemy import update

from infra.db import session_scope
from infra.models import Artifact, Job, Org
from infra.storage import get_store
from worker.pipeline import JobCancelled, JobContext


def _single_file(paths: list[Path], out_dir: Path, target: str) -> Path:
    """A device downloads one file: a GGUF as is, a multi-file checkpoint as an uncompressed tar
    (safetensors do not compress, and tar keeps Range downloads resumable)."""
    if len(paths) == 1 and paths[0].is_file():
        return paths[0]
    tar_path = out_dir / f"{target}.tar"
    with tarfile.open(tar_path, "w") as tar:
        for p in paths:
            tar.add(p, arcname=p.name)
    return tar_path


def _fine_tuned_name(ctx: JobContext, org_name: str) -> str:
    # OpenAI's shape: ft:<base>:<org>:<suffix>:<id>
    return f"ft:{ctx.config.model}:{org_name}:{ctx.config.suffix or ''}:{ctx.job_id.split('-')[-1][:8]}"


def _upload_target(ctx: JobContext, target: str, entry: dict[str, Any]) -> dict[str, Any]:
    from registry.manifest import build_manifest, model_card
    from registry.profiles import get_profile

    profile = get_profile(target)
    main = _single_file([Path(p) for p in entry["files"]], ctx.work_dir / "export", target)
    eval_scores = {**ctx.state.get("eval", {}), "artifact": entry.get("eval"), "gate": ctx.state.get("gate")}
    manifest = build_manifest(
        ctx.job_id,
        ctx.config,
        profile,
        [main],
        main.parent,
        eval_scores,
        {"target": target, "synth_report": ctx.state.get("synth_report")},
        merged_dir=Path(ctx.state["merged_dir"]),
    )
    prefix = f"artifacts/{ctx.org_id}/{ctx.job_id}/{target}"
    sha = manifest["files"][0]["sha256"]
    store = get_store()
    store.put_file(f"{prefix}/{main.name}", main, metadata={"sha256": sha})
    store.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest, indent=2).encode())
    store.put_bytes(f"{prefix}/README.md", model_card(manifest).encode())
    return {
        "target": target,
        "format": profile.format,
        "quantization": profile.quantization,
        "filename": main.name,
        "bytes": main.stat().st_size,
        "sha256": sha,
        "storage_key": f"{prefix}/{main.name}",
        "manifest": manifest,
    }


def publish(ctx: JobContext) -> dict[str, Any]:
    uploaded = []
    for target, entry in ctx.state["exported"].items():
        ctx.check_cancel()
        uploaded.append(_upload_target(ctx, target, entry))
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        org = session.get(Org, ctx.org_id)
        assert job is not None and org is not None
        name = _fine_tuned_name(ctx, org.name)
        # The conditional update takes the write lock first; if a cancel got there before us, stop.
        claimed = session.execute(
            update(Job).where(Job.id == ctx.job_id, Job.status == "running").values(fine_tuned_model=name)
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            raise JobCancelled()
        for a in uploaded:
            session.add(Artifact(org_id=ctx.org_id, job_id=ctx.job_id, **a))
    ctx.event(
        f"Published {len(uploaded)} artifact(s) as {name}",
        data={"targets": [a["target"] for a in uploaded], "fine_tuned_model": name},
    )
    return {"fine_tuned_model": name}
