"""A published artifact without running a job to the end: bytes in a store plus the row the
publish stage would write, for tests of what serves artifacts (download URLs, the CLI)."""

from __future__ import annotations

import hashlib

import httpx

from infra.storage import ArtifactStore
from tests.api.helpers import sentiment_rows


def cancelled_job(api: httpx.Client, model: str) -> str:
    """A job row for a seeded artifact to belong to, made through the agent tools and cancelled at
    once (no worker needed)."""
    f = api.post("/tools/upload_training_file", json={"rows": sentiment_rows(40)}).json()
    args = {"model": model, "training_file": f["id"], "idempotency_key": f["id"], "budget_usd": 50}
    job_id = str(api.post("/tools/create_finetune_job", json=args).json()["id"])
    api.post("/tools/cancel_job", json={"job_id": job_id})
    return job_id


def seed_artifact(api_key: str, job_id: str, data: bytes, store: ArtifactStore | None = None) -> str:
    from infra.db import session_scope
    from infra.models import Artifact, new_id
    from infra.storage import get_store
    from services.orgs import authenticate

    with session_scope() as session:
        org = authenticate(session=session, authorization=f"Bearer {api_key}")
        art_id = new_id("art")
        key = f"artifacts/{org.id}/{job_id}/laptop-cpu/model-{art_id}.gguf"
        (store or get_store()).put_bytes(key, data)
        session.add(
            Artifact(
                id=art_id,
                org_id=org.id,
                job_id=job_id,
                target="laptop-cpu",
                format="gguf",
                quantization="Q4_K_M",
                filename="model.gguf",
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                storage_key=key,
                manifest={"eval": {"score": 1.0}},
            )
        )
    return art_id
