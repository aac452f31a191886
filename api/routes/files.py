from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import StreamingResponse

from api.deps import CurrentOrg, SessionDep
from api.schemas.common import DeletedPublic, ListPublic
from api.schemas.files import FilePublic
from api.services import files as svc

router = APIRouter(tags=["files"])


@router.post("/files", response_model=FilePublic)
def upload_file(
    session: SessionDep, org: CurrentOrg, file: UploadFile, purpose: Annotated[str, Form()]
) -> FilePublic:
    # sync on purpose: FastAPI runs it in a worker thread, so copying and scanning a large file
    # never holds the event loop (other orgs' requests keep their latency)
    name = file.filename or "upload.jsonl"
    created = svc.upload_file(session=session, org=org, filename=name, purpose=purpose, stream=file.file)
    return svc.to_public(created)


@router.get("/files", response_model=ListPublic[FilePublic])
def list_files(
    session: SessionDep, org: CurrentOrg, after: str | None = None, limit: int = 20
) -> ListPublic[FilePublic]:
    rows, has_more = svc.list_files(session=session, org=org, after=after, limit=limit)
    data = [svc.to_public(f) for f in rows]
    return ListPublic(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/files/{file_id}", response_model=FilePublic)
def retrieve_file(session: SessionDep, org: CurrentOrg, file_id: str) -> FilePublic:
    return svc.to_public(svc.get_file(session=session, org=org, file_id=file_id))


@router.get("/files/{file_id}/content")
def file_content(session: SessionDep, org: CurrentOrg, file_id: str) -> StreamingResponse:
    f, chunks = svc.stream_content(session=session, org=org, file_id=file_id)
    headers = {"Content-Length": str(f.bytes), "X-Edgetune-Sha256": f.sha256}
    return StreamingResponse(chunks, media_type="application/jsonl", headers=headers)


@router.delete("/files/{file_id}", response_model=DeletedPublic)
def delete_file(session: SessionDep, org: CurrentOrg, file_id: str) -> DeletedPublic:
    svc.delete_file(session=session, org=org, file_id=file_id)
    return DeletedPublic(id=file_id, object="file")
