"""The operator's routes: the worker pools' queues, depth and live workers (issue 17)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import OperatorOnly
from services import pools as svc
from services.schemas.pools import PoolsPublic

router = APIRouter(prefix="/operator", tags=["operator"], dependencies=[OperatorOnly])


@router.get("/pools", response_model=PoolsPublic)
def list_pools() -> PoolsPublic:
    """Each compute pool's queue, the messages waiting on it and the live workers consuming it."""
    return svc.pools_status()
