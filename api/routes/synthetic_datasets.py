from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from api.deps import CurrentOrg, HeavyOrg, SessionDep
from api.sse import event_stream, openapi_responses
from services import event_streams
from services import synthetic_datasets as svc
from services.schemas.common import ListPublic
from services.schemas.synthetic_datasets import SyntheticDatasetCreate, SyntheticDatasetPublic

router = APIRouter(prefix="/synthetic_datasets", tags=["synthetic-datasets"])


@router.post("", response_model=SyntheticDatasetPublic)
def create_dataset(
    session: SessionDep, org: HeavyOrg, body: SyntheticDatasetCreate
) -> SyntheticDatasetPublic:
    """Start synthesizing a training and an eval file from a task spec (runs on a worker)."""
    return svc.to_public(svc.submit_dataset(session=session, org=org, body=body))


@router.get("", response_model=ListPublic[SyntheticDatasetPublic])
def list_datasets(
    session: SessionDep, org: CurrentOrg, after: str | None = None, limit: int = 20
) -> ListPublic[SyntheticDatasetPublic]:
    rows, has_more = svc.list_datasets(session=session, org=org, after=after, limit=limit)
    data = [svc.to_public(d) for d in rows]
    return ListPublic.of(data, has_more)


@router.get("/{dataset_id}", response_model=SyntheticDatasetPublic)
def retrieve_dataset(session: SessionDep, org: CurrentOrg, dataset_id: str) -> SyntheticDatasetPublic:
    return svc.to_public(svc.get_dataset(session=session, org=org, dataset_id=dataset_id))


@router.post("/{dataset_id}/cancel", response_model=SyntheticDatasetPublic)
def cancel_dataset(session: SessionDep, org: CurrentOrg, dataset_id: str) -> SyntheticDatasetPublic:
    return svc.to_public(svc.cancel_dataset(session=session, org=org, dataset_id=dataset_id))


@router.get(
    "/{dataset_id}/events",
    response_class=StreamingResponse,
    responses=openapi_responses("Server-Sent Events: the dataset's progress, then done"),
)
def dataset_events(
    session: SessionDep,
    org: CurrentOrg,
    dataset_id: str,
    last_event_id: Annotated[str | None, Header(max_length=256)] = None,
) -> StreamingResponse:
    """Server-Sent Events only (there is no JSON form: GET the dataset for one snapshot). Each time
    the dataset's status or progress changes, `event: synthetic_dataset.progress` with the dataset
    as `data` and as `id` a short hash of (status, progress); the first frame is the state now,
    unless the `Last-Event-ID` header is that state's id. At a terminal status, `event: done` with
    the dataset, and the stream closes. `: keep-alive` comments fill silences; a stream that
    reaches EDGETUNE_EVENT_STREAM_MAX_S closes without `done`: reconnect with Last-Event-ID."""
    frames = event_streams.open_dataset_stream(
        session=session, org=org, dataset_id=dataset_id, last_event_id=last_event_id
    )
    return event_stream(frames)
