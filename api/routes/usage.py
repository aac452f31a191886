from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentOrg, SessionDep
from domain.job_config import MAX_UNIX_TIME
from services import usage as svc
from services.schemas.usage import GroupBy, InvoicePreviewPublic, UsagePublic

router = APIRouter(prefix="/usage", tags=["usage"])


@router.get("", response_model=UsagePublic)
def get_usage(
    session: SessionDep,
    org: CurrentOrg,
    group_by: GroupBy = "day",
    start_time: Annotated[
        int | None, Query(ge=0, le=MAX_UNIX_TIME, description="Unix seconds, inclusive.")
    ] = None,
    end_time: Annotated[
        int | None, Query(ge=0, le=MAX_UNIX_TIME, description="Unix seconds, exclusive.")
    ] = None,
) -> UsagePublic:
    """The caller's ledger by job or by UTC day, with totals; defaults to the current month."""
    return svc.get_usage(
        session=session, org=org, group_by=group_by, start_time=start_time, end_time=end_time
    )


@router.get("/invoice_preview", response_model=InvoicePreviewPublic)
def invoice_preview(session: SessionDep, org: CurrentOrg) -> InvoicePreviewPublic:
    """The current calendar month (UTC) so far: a line per stage and unit, and the total."""
    return svc.invoice_preview(session=session, org=org)
