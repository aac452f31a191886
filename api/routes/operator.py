"""The operator's routes: the worker pools' queues, depth and live workers (issue 17)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import OperatorOnly
from services import pools as svc
from services.schemas.pools import PoolsPublic

# Not in the OpenAPI spec: the spec is the tenants' API, and these routes are 404 to everyone
# but the operator.
router = APIRouter(
    prefix="/operator", tags=["operator"], dependencies=[OperatorOnly], include_in_schema=False
)


@router.get("/pools", response_model=PoolsPublic)
def list_pools() -> PoolsPublic:
    """Each compute pool's queue, the messages waiting on it and the live workers consuming it."""
    return svc.pools_status()
