from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentOrg, SessionDep
from core.schemas.artifacts import ModelPublic
from core.schemas.common import ListPublic
from core.services import models as svc

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ListPublic[ModelPublic])
def list_models(session: SessionDep, org: CurrentOrg) -> ListPublic[ModelPublic]:
    return ListPublic(data=svc.list_models(session=session, org=org))
