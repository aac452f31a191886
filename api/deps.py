from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from infra.db import get_sessionmaker
from infra.models import Org
from services import limits
from services.api_keys import authenticate
from services.operators import authenticate_operator


def get_db() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def get_current_org(session: SessionDep, authorization: Annotated[str | None, Header()] = None) -> Org:
    """The org of the request's Bearer key: a missing, unknown or revoked key is a 401
    `invalid_api_key` (`missing_api_key` when absent), an expired one a 401 `api_key_expired`;
    past the org's request rate, a 429 (services/limits.py)."""
    org = authenticate(session=session, authorization=authorization)
    limits.check_rate(org)
    return org


CurrentOrg = Annotated[Org, Depends(get_current_org)]


def get_heavy_org(org: CurrentOrg) -> Iterator[Org]:
    """For the routes that tokenize, copy or queue: the org's heavy rate and one of its concurrent
    heavy slots, held until the route returns."""
    with limits.heavy_slot(org):
        yield org


HeavyOrg = Annotated[Org, Depends(get_heavy_org)]


def require_operator(authorization: Annotated[str | None, Header()] = None) -> None:
    """For /v1/operator/*: the operator's token (services/operators.py), never a tenant's key."""
    authenticate_operator(authorization)


OperatorOnly = Depends(require_operator)
