from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import PlainTextResponse, StreamingResponse

from api.deps import CurrentOrg, SessionDep
from services import artifacts as svc
from services.schemas.artifacts import ArtifactPublic
from services.schemas.common import ListPublic

router = APIRouter(prefix="/artifacts", tags=["artifacts"])


@router.get("", response_model=ListPublic[ArtifactPublic])
def list_artifacts(
    session: SessionDep,
    org: CurrentOrg,
    job_id: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int = 20,
) -> ListPublic[ArtifactPublic]:
    rows, has_more = svc.list_artifacts(
        session=session, org=org, job_id=job_id, after=after, limit=limit, status=status
    )
    data = [svc.to_public(a) for a in rows]
    return ListPublic.of(data, has_more)


@router.get("/{artifact_id}", response_model=ArtifactPublic)
def retrieve_artifact(session: SessionDep, org: CurrentOrg, artifact_id: str) -> ArtifactPublic:
    return svc.to_public(svc.get_artifact(session=session, org=org, artifact_id=artifact_id))


@router.get("/{artifact_id}/manifest")
def artifact_manifest(session: SessionDep, org: CurrentOrg, artifact_id: str) -> dict[str, Any]:
    return svc.get_artifact(session=session, org=org, artifact_id=artifact_id).manifest


@router.get("/{artifact_id}/grammar", response_class=PlainTextResponse)
def artifact_grammar(session: SessionDep, org: CurrentOrg, artifact_id: str) -> PlainTextResponse:
    """The GBNF grammar the artifact was scored under and ships with (llama.cpp --grammar-file)."""
    a = svc.get_artifact(session=session, org=org, artifact_id=artifact_id)
    name, text = svc.grammar_text(a)
    return PlainTextResponse(text, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/{artifact_id}/content")
def artifact_content(
    session: SessionDep, org: CurrentOrg, artifact_id: str, range: Annotated[str | None, Header()] = None
) -> StreamingResponse:
    a = svc.get_artifact(session=session, org=org, artifact_id=artifact_id)
    byte_range = svc.parse_range(range, a.bytes)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{a.filename}"',
        "X-Edgetune-Sha256": a.sha256,
    }
    if byte_range is None:
        headers["Content-Length"] = str(a.bytes)
        return StreamingResponse(svc.stream(a, None), media_type="application/octet-stream", headers=headers)
    start, end = byte_range
    headers |= {"Content-Range": f"bytes {start}-{end}/{a.bytes}", "Content-Length": str(end - start + 1)}
    return StreamingResponse(
        svc.stream(a, byte_range), status_code=206, media_type="application/octet-stream", headers=headers
    )
