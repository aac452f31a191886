"""`GET /v1/models`: the base-model catalog (with local availability) and the org's fine-tunes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.models import Job, Org
from infra.settings import get_settings
from services.schemas.artifacts import ModelPublic


def list_models(*, session: Session, org: Org) -> list[ModelPublic]:
    from recipes.base_models import list_base_models

    s = get_settings()
    out = [
        ModelPublic(
            id=m.id,
            created=0,
            owned_by=m.id.split("/")[0] if "/" in m.id else "local",
            kind="base",
            details=m.model_dump(exclude={"id", "local_path"}, mode="json"),
        )
        for m in list_base_models(s.models_dir, s.model_cache_dir)
    ]
    jobs = session.scalars(
        select(Job).where(Job.org_id == org.id, Job.status == "succeeded").order_by(Job.created_at.desc())
    )
    out += [
        ModelPublic(
            id=j.fine_tuned_model or j.id,
            created=j.finished_at or j.created_at,
            owned_by=org.name,
            kind="fine-tuned",
            details={"base_model": j.model, "job_id": j.id, "targets": j.config["targets"]},
        )
        for j in jobs
    ]
    return out
