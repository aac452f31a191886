from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentOrg, SessionDep
from services import models as svc
from services.schemas.artifacts import ModelPublic
from services.schemas.common import ListPublic

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ListPublic[ModelPublic])
def list_models(session: SessionDep, org: CurrentOrg) -> ListPublic[ModelPublic]:
    return ListPublic(data=svc.list_models(session=session, org=org))
