from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentOrg, HeavyOrg, SessionDep
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
