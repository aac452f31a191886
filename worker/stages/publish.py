"""Publish: bytes into the artifact store first, then one transaction that re-checks the job is
still running and writes the artifact rows and the job's registry version. A cancel that lands
first leaves no row behind.

A job whose gate failed goes through the same steps from the gate stage (`store_rejected`): its
artifacts are stored with status `rejected`, so the customer can download and inspect them, and its
registry version is marked failed, so no alias can point at it. The job still ends failed.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from sqlalchemy import update

from infra.db import session_scope
from infra.models import Artifact, Job, ModelVersion, Org, now
from infra.storage import get_store
from services import model_registry as registry_service
from worker.context import JobCancelled, JobContext
from worker.stages.common import made_from


def _single_file(paths: list[Path], out_dir: Path, target: str) -> Path:
    """A device downloads one file: a GGUF as is, a multi-file artifact as an uncompressed tar
    (safetensors do not compress, and tar keeps Range downloads resumable) with the paths it has
    under its target folder (an ONNX artifact keeps transformers.js's `onnx/` subfolder)."""
    if len(paths) == 1 and paths[0].is_file():
        return paths[0]
    root = out_dir / target
    tar_path = out_dir / f"{target}.tar"
    with tarfile.open(tar_path, "w") as tar:
        for p in paths:
            tar.add(p, arcname=p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name)
    return tar_path


def _fine_tuned_name(ctx: JobContext, org_name: str) -> str:
    # OpenAI's shape: ft:<base>:<org>:<suffix>:<id>
    return f"ft:{ctx.config.model}:{org_name}:{ctx.config.suffix or ''}:{ctx.job_id.split('-')[-1][:8]}"


def _rejection_note(gate: dict[str, Any] | None) -> str:
    reasons = "\n".join(f"- {r}" for r in (gate or {}).get("reasons", [])) or "- (no reasons recorded)"
    return (
        "\n## Rejected by the eval gate\n\nThis artifact is kept for inspection only; it was not "
        f"published and no registry alias can point at it.\n\n{reasons}\n"
    )


def _grammar(entry: dict[str, Any]) -> Path | None:
    """The task grammar the export scored this GGUF under (worker/stages._score_artifact)."""
    return Path(entry["grammar"]) if entry.get("grammar") else None


def _put_artifact(
    ctx: JobContext,
    target: str,
    path: Path,
    manifest: dict[str, Any],
    status: str,
    grammar: Path | None = None,
) -> dict[str, Any]:
    """Upload one artifact's file, manifest and model card (and the grammar it ships with, by the
    name its manifest gives) under its target; its row's fields."""
    from export.manifest import model_card

    prefix = f"artifacts/{ctx.org_id}/{ctx.job_id}/{target}"
    sha = manifest["files"][0]["sha256"]
    card = model_card(manifest) + (_rejection_note(ctx.state.get("gate")) if status == "rejected" else "")
    store = get_store()
    store.put_file(f"{prefix}/{path.name}", path, metadata={"sha256": sha})
    store.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest, indent=2).encode())
    store.put_bytes(f"{prefix}/README.md", card.encode())
    if grammar is not None:
        store.put_file(f"{prefix}/{grammar.name}", grammar)
    return {
        "target": target,
        "format": manifest["format"],
        "quantization": manifest["quantization"],
        "filename": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha,
        "storage_key": f"{prefix}/{path.name}",
        "manifest": manifest,
        "status": status,
    }


def _upload_target(ctx: JobContext, target: str, entry: dict[str, Any], status: str) -> dict[str, Any]:
    from export.manifest import build_manifest
    from export.profiles import get_profile

    profile = get_profile(target)
    main = _single_file([Path(p) for p in entry["files"]], ctx.work_dir / "export", target)
    gate = ctx.state.get("gate")
    base, made = _made_from(ctx, entry)
    eval_scores = {**made.get("eval", {}), "artifact": entry.get("eval"), "gate": gate}
    manifest = build_manifest(
        ctx.job_id,
        ctx.config,
        profile,
        [main],
        main.parent,
        eval_scores,
        {
            "target": target,
            "synth_report": ctx.state.get("synth_report"),
            "status": status,
            # decode speed and memory as measured on the worker host, and each budget's outcome
            "host_measurements": entry.get("runtime_stats"),
            # the same figures from a device agent of the profile, when one measured it (the
            # budgets then read these: worker/stages/device_figures.py)
            "device_measurements": entry.get("device_stats"),
            "device_prediction": entry.get("device_prediction"),  # export/device_model.py
            # a best_within_budget target: every quantization of its sweep, judged, and the choice
            "frontier": entry.get("frontier"),
            "selection": entry.get("selection"),
            "budgets": entry.get("budgets"),
            "budget_flags": ((gate or {}).get("artifacts", {}).get(target) or {}).get("flags", []),
        },
        merged_dir=Path(made["merged_dir"]),
        quantization=(entry.get("selection") or {}).get("chosen"),
        grammar=_grammar(entry),
        base_model=base,
    )
    return _put_artifact(ctx, target, main, manifest, status, _grammar(entry))


def _made_from(ctx: JobContext, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The base an exported entry was fine-tuned from, and that fine-tune's outputs and eval: the
    job's model, or the one of a sweep's other bases that its target chose."""
    base = entry.get("base_model") or ctx.config.model
    return base, made_from(ctx, base)


def _upload_adapter(ctx: JobContext, target: str, entry: dict[str, Any], status: str) -> dict[str, Any]:
    """A LoRA job's adapter GGUF as its own artifact, `<target>-adapter` (format `gguf-lora`): the
    artifact list shows it with its bytes and sha256, and its content endpoint streams just the
    adapter to a device that already holds the base. Its manifest names the base and `--lora`."""
    from export.manifest import build_adapter_manifest
    from export.profiles import get_profile

    adapter = Path(entry["adapter"]["files"][0])
    name = f"{target}-adapter"
    base, made = _made_from(ctx, entry)
    manifest = build_adapter_manifest(
        ctx.job_id,
        ctx.config,
        get_profile(target),
        adapter,
        entry["adapter"]["info"],
        # the fine-tune's scores; the adapter is not scored apart from the merged model
        {**made.get("eval", {}), "gate": ctx.state.get("gate")},
        {"target": name, "model_target": target, "status": status},
        merged_dir=Path(made["merged_dir"]),
        grammar=_grammar(entry),
        base_model=base,
    )
    return _put_artifact(ctx, name, adapter, manifest, status, _grammar(entry))


def _version_info(v: ModelVersion) -> dict[str, Any]:
    return {"version": v.version, "fine_tuned_model": v.fine_tuned_model, "artifacts": len(v.artifact_ids)}


def _recorded_version(ctx: JobContext) -> dict[str, Any] | None:
    """The version an earlier attempt of this step committed (its worker died before the stage was
    marked done): the step is then already complete and must not upload or add rows again."""
    with session_scope() as session:
        v = registry_service.version_of_job(session, ctx.job_id)
        return None if v is None else _version_info(v)


def _commit(ctx: JobContext, uploaded: list[dict[str, Any]], passed: bool) -> dict[str, Any]:
    model_name = registry_service.model_name_for(ctx.config)
    with session_scope() as session:
        org = session.get(Org, ctx.org_id)
        assert org is not None
        name = _fine_tuned_name(ctx, org.name) if passed else None
        # The conditional update takes the job's write lock first; if a cancel got there before us,
        # stop. A rejected job keeps fine_tuned_model empty, so it touches the heartbeat instead.
        values: dict[str, Any] = {"fine_tuned_model": name} if passed else {"heartbeat_at": now()}
        claimed = session.execute(
            update(Job).where(Job.id == ctx.job_id, Job.status == "running").values(**values)
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            raise JobCancelled()
        # Under the job's lock: a concurrent attempt of this step (a reclaimed job) that committed
        # first is seen here, so rows are never written twice.
        existing = registry_service.version_of_job(session, ctx.job_id)
        if existing is not None:
            return _version_info(existing)
        rows = [Artifact(org_id=ctx.org_id, job_id=ctx.job_id, **a) for a in uploaded]
        session.add_all(rows)
        session.flush()
        version = registry_service.record_version(
            session,
            org_id=ctx.org_id,
            job_id=ctx.job_id,
            model_name=model_name,
            fine_tuned_model=name,
            gate=ctx.state.get("gate"),
            gate_passed=passed,
            artifact_ids=[r.id for r in rows],
        )
        return _version_info(version)


def _store(ctx: JobContext, passed: bool) -> dict[str, Any]:
    """Upload every exported target and record them, once; returns the job's version."""
    done = _recorded_version(ctx)
    if done is not None:
        return done
    status = "published" if passed else "rejected"
    uploaded = []
    for target, entry in ctx.state["exported"].items():
        ctx.check_cancel()
        uploaded.append(_upload_target(ctx, target, entry, status))
        if "adapter" in entry:
            uploaded.append(_upload_adapter(ctx, target, entry, status))
    return _commit(ctx, uploaded, passed)


def publish(ctx: JobContext) -> dict[str, Any]:
    """The publish stage: the gate passed, so the artifacts go out as the job's fine-tuned model."""
    version = _store(ctx, passed=True)
    name, model = version["fine_tuned_model"], registry_service.model_name_for(ctx.config)
    ctx.event(
        f"Published {version['artifacts']} artifact(s) as {name}, "
        f"version {version['version']} of model {model}",
        data={
            "targets": list(ctx.state["exported"]),
            "fine_tuned_model": name,
            "registered_model": model,
            "version": version["version"],
        },
    )
    return {"fine_tuned_model": name, "registry_version": version["version"]}


def store_rejected(ctx: JobContext) -> dict[str, Any]:
    """Called by the gate stage when the gate failed, before it fails the job: the artifacts stay
    inspectable (status `rejected`) and the registry gets a version that no alias may point at."""
    version = _store(ctx, passed=False)
    model = registry_service.model_name_for(ctx.config)
    ctx.event(
        f"Stored {version['artifacts']} rejected artifact(s) for inspection as version "
        f"{version['version']} of model {model}; they are not published",
        level="warn",
        data={
            "targets": list(ctx.state["exported"]),
            "registered_model": model,
            "version": version["version"],
            "status": "rejected",
        },
    )
    return {"registry_version": version["version"]}
