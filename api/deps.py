from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from api.services.orgs import authenticate
from infra.db import get_sessionmaker
from infra.models import Org


def get_db() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def get_current_org(session: SessionDep, authorization: Annotated[str | None, Header()] = None) -> Org:
    return authenticate(session=session, authorization=authorization)


CurrentOrg = Annotated[Org, Depends(get_current_org)]
