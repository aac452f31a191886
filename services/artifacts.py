"""Device artifacts (published, or rejected by the gate and kept for inspection): listing,
manifests and byte-range downloads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.models import Artifact, Org
from infra.storage import get_store
from services.errors import InvalidRequest, NotFound, RangeNotSatisfiable
from services.jobs import get_job
from services.pagination import page
from services.schemas.artifacts import ARTIFACT_STATUSES, ArtifactPublic, ArtifactStatus


def to_public(a: Artifact) -> ArtifactPublic:
    return ArtifactPublic(
        id=a.id,
        created_at=a.created_at,
        job_id=a.job_id,
        target=a.target,
        format=a.format,
        quantization=a.quantization,
        filename=a.filename,
        bytes=a.bytes,
        sha256=a.sha256,
        eval=a.manifest.get("eval"),
        download_url=get_store().presigned_url(a.storage_key),
        status=cast(ArtifactStatus, a.status),  # the column only ever holds ARTIFACT_STATUSES
    )


def get_artifact(*, session: Session, org: Org, artifact_id: str) -> Artifact:
    a = session.get(Artifact, artifact_id)
    if a is None or a.org_id != org.id:
        raise NotFound(f"No such artifact: {artifact_id!r}", param="artifact_id", code="artifact_not_found")
    return a


def list_artifacts(
    *,
    session: Session,
    org: Org,
    job_id: str | None,
    after: str | None,
    limit: int,
    status: str | None = None,
) -> tuple[list[Artifact], bool]:
    stmt = select(Artifact).where(Artifact.org_id == org.id)
    if status is not None:
        if status not in ARTIFACT_STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(ARTIFACT_STATUSES)}", param="status")
        stmt = stmt.where(Artifact.status == status)
    if job_id:
        stmt = stmt.where(Artifact.job_id == get_job(session=session, org=org, job_id=job_id).id)
    after_row = get_artifact(session=session, org=org, artifact_id=after) if after else None
    return page(session, stmt, (Artifact.created_at, Artifact.id), after_row, limit)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range; None means the whole file."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    start_s, dash, end_s = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec:
        raise RangeNotSatisfiable(
            f"unsupported Range header {header!r}; use a single bytes=a-b range", param="Range"
        )
    try:
        if start_s == "":
            start, end = max(size - int(end_s), 0), size - 1
        else:
            start, end = int(start_s), (int(end_s) if end_s else size - 1)
    except ValueError:
        raise RangeNotSatisfiable(f"malformed Range header {header!r}", param="Range") from None
    end = min(end, size - 1)
    if start > end or start >= size:
        raise RangeNotSatisfiable(f"range {header!r} is outside the {size}-byte file", param="Range")
    return start, end


def stream(a: Artifact, byte_range: tuple[int, int] | None) -> Iterator[bytes]:
    start, end = byte_range or (0, a.bytes - 1)
    return get_store().iter_range(a.storage_key, start, end)


def grammar_text(a: Artifact) -> tuple[str, str]:
    """The llama.cpp grammar an artifact ships with (its manifest's `grammar`, stored beside the
    model file): its file name and text. NotFound for an artifact of a task with nothing to
    constrain (chat, generation) or one published before grammars were."""
    entry = (a.manifest or {}).get("grammar")
    if not entry:
        raise NotFound(
            f"Artifact {a.id!r} ships no grammar: its task has no labels, output_schema or tools "
            "to constrain",
            param="artifact_id",
            code="grammar_not_found",
        )
    key = f"{a.storage_key.rsplit('/', 1)[0]}/{entry['path']}"
    return entry["path"], get_store().get_bytes(key).decode()
