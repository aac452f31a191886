from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import CurrentOrg, HeavyOrg, SessionDep
from api.multipart_upload import OPENAPI_REQUEST_BODY, Upload, receive_upload, upload_dir
from infra.models import File, Org
from services import files as svc
from services.schemas.common import DeletedPublic, ListPublic
from services.schemas.files import FilePublic

router = APIRouter(tags=["files"])


@router.post("/files", response_model=FilePublic, openapi_extra=OPENAPI_REQUEST_BODY)
async def upload_file(request: Request, session: SessionDep, org: HeavyOrg) -> FilePublic:
    # async, reading the body itself: the event loop only appends chunks to a file; the multipart
    # parsing, the scan and the store run in worker threads (api/multipart_upload.py), so other
    # orgs' requests keep their latency while a large file arrives and is processed
    await run_in_threadpool(session.commit)  # end the key lookup's read: no pooled connection idles
    async with upload_dir() as tmp:
        form = await receive_upload(request, tmp)
        created = await run_in_threadpool(_store, session, org, form)
    return svc.to_public(created)


def _store(session: Session, org: Org, form: Upload) -> File:
    """The parsed form's file checked and stored (blocking: run in a worker thread)."""
    path, purpose = form.required_file(), form.required("purpose")
    name = form.filename or "upload.jsonl"
    with path.open("rb") as stream:
        return svc.upload_file(session=session, org=org, filename=name, purpose=purpose, stream=stream)


@router.get("/files", response_model=ListPublic[FilePublic])
def list_files(
    session: SessionDep, org: CurrentOrg, after: str | None = None, limit: int = 20
) -> ListPublic[FilePublic]:
    rows, has_more = svc.list_files(session=session, org=org, after=after, limit=limit)
    data = [svc.to_public(f) for f in rows]
    return ListPublic.of(data, has_more)


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
