from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentOrg, SessionDep
from services import api_keys as svc
from services.schemas.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeyRotate
from services.schemas.common import ListPublic

router = APIRouter(prefix="/api_keys", tags=["api_keys"])


@router.post("", response_model=ApiKeyCreated)
def create_api_key(session: SessionDep, org: CurrentOrg, body: ApiKeyCreate) -> ApiKeyCreated:
    row, key = svc.create(
        session=session,
        org=org,
        name=body.name,
        expires_in_days=body.expires_in_days,
        expires_at=body.expires_at,
    )
    return ApiKeyCreated(**svc.to_public(row), key=key)


@router.get("", response_model=ListPublic[ApiKeyPublic])
def list_api_keys(
    session: SessionDep, org: CurrentOrg, after: str | None = None, limit: int = 20
) -> ListPublic[ApiKeyPublic]:
    rows, has_more = svc.list_keys(session=session, org=org, after=after, limit=limit)
    data = [ApiKeyPublic(**svc.to_public(row)) for row in rows]
    return ListPublic.of(data, has_more)


@router.get("/{key_id}", response_model=ApiKeyPublic)
def retrieve_api_key(session: SessionDep, org: CurrentOrg, key_id: str) -> ApiKeyPublic:
    return ApiKeyPublic(**svc.to_public(svc.get_key(session=session, org=org, key_id=key_id)))


@router.delete("/{key_id}", response_model=ApiKeyPublic)
def revoke_api_key(session: SessionDep, org: CurrentOrg, key_id: str) -> ApiKeyPublic:
    return ApiKeyPublic(**svc.to_public(svc.revoke(session=session, org=org, key_id=key_id)))


@router.post("/{key_id}/rotate", response_model=ApiKeyCreated)
def rotate_api_key(
    session: SessionDep, org: CurrentOrg, key_id: str, body: ApiKeyRotate | None = None
) -> ApiKeyCreated:
    body = body or ApiKeyRotate()
    row, key, _ = svc.rotate(
        session=session,
        org=org,
        key_id=key_id,
        grace_period_seconds=body.grace_period_seconds,
        expires_in_days=body.expires_in_days,
        expires_at=body.expires_at,
    )
    return ApiKeyCreated(**svc.to_public(row), key=key)
