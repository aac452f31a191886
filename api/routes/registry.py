from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentOrg, SessionDep
from services import model_registry as svc
from services.schemas.common import DeletedPublic, ListPublic
from services.schemas.registry import (
    ModelAliasPublic,
    ModelAliasUpdate,
    ModelVersionPublic,
    RegisteredModelPublic,
)

router = APIRouter(prefix="/registry/models", tags=["registry"])


@router.get("", response_model=ListPublic[RegisteredModelPublic])
def list_models(
    session: SessionDep, org: CurrentOrg, after: str | None = None, limit: int = 20
) -> ListPublic[RegisteredModelPublic]:
    rows, has_more = svc.list_models(session=session, org=org, after=after, limit=limit)
    data = svc.models_to_public(session, rows)
    return ListPublic.of(data, has_more)


@router.get("/{name}", response_model=RegisteredModelPublic)
def retrieve_model(session: SessionDep, org: CurrentOrg, name: str) -> RegisteredModelPublic:
    return svc.models_to_public(session, [svc.get_model(session=session, org=org, name=name)])[0]


@router.get("/{name}/versions", response_model=ListPublic[ModelVersionPublic])
def list_versions(
    session: SessionDep, org: CurrentOrg, name: str, after: str | None = None, limit: int = 20
) -> ListPublic[ModelVersionPublic]:
    rows, has_more = svc.list_versions(session=session, org=org, name=name, after=after, limit=limit)
    data = svc.versions_to_public(session, rows)
    return ListPublic.of(data, has_more)


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic)
def retrieve_version(session: SessionDep, org: CurrentOrg, name: str, version: int) -> ModelVersionPublic:
    row = svc.get_version(session=session, org=org, name=name, version=version)
    return svc.versions_to_public(session, [row])[0]


@router.put("/{name}/aliases/{alias}", response_model=ModelAliasPublic)
def set_alias(
    session: SessionDep, org: CurrentOrg, name: str, alias: str, body: ModelAliasUpdate
) -> ModelAliasPublic:
    row = svc.set_alias(session=session, org=org, name=name, alias=alias, version=body.version)
    return svc.alias_to_public(session, row)


@router.get("/{name}/aliases/{alias}", response_model=ModelAliasPublic)
def retrieve_alias(session: SessionDep, org: CurrentOrg, name: str, alias: str) -> ModelAliasPublic:
    return svc.alias_to_public(session, svc.get_alias(session=session, org=org, name=name, alias=alias))


@router.delete("/{name}/aliases/{alias}", response_model=DeletedPublic)
def delete_alias(session: SessionDep, org: CurrentOrg, name: str, alias: str) -> DeletedPublic:
    svc.delete_alias(session=session, org=org, name=name, alias=alias)
    return DeletedPublic(id=alias, object="model_alias")
