"""The console's synthetic datasets: the org's list, and a dataset's page with its progress (polled
while it runs, as a job's), what was kept and dropped and why, the label or tool balance, the
round-trip agreement, and a browsable sample of the rows it stored. Read through the same service
functions as `GET /v1/synthetic_datasets`, with the org of the session."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.console import auth
from api.console.errors import ConsoleRoute
from api.console.pages import render
from api.deps import SessionDep
from infra.settings import get_settings
from services import files, synthetic_datasets
from services.schemas.synthetic_datasets import SyntheticDatasetPublic

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
PER_PAGE = 25  # datasets on the list, and rows on a page of the sample
ACTIVE = ("queued", "running")


@router.get("/datasets", name="console_datasets")
def datasets_page(
    request: Request, session: SessionDep, user: auth.ConsoleUserDep, after: str | None = None
) -> Response:
    rows, has_more = synthetic_datasets.list_datasets(
        session=session, org=user.org, after=after, limit=PER_PAGE
    )
    public = [synthetic_datasets.to_public(d) for d in rows]
    context = {"csrf": user.csrf, "datasets": public, "next_after": public[-1].id if has_more else None}
    return render(request, "datasets.html", context)


def _live_context(ds: SyntheticDatasetPublic) -> dict[str, Any]:
    return {"ds": ds, "active": ds.status in ACTIVE, "poll_s": get_settings().event_stream_poll_s * 2}


def _sample(
    session: SessionDep, user: auth.ConsoleUser, file_id: str | None, offset: int
) -> list[dict[str, Any]]:
    """One page of the stored rows (the training file): each row's turns and its provenance."""
    if file_id is None:
        return []
    lines = files.file_content(session=session, org=user.org, file_id=file_id).splitlines()
    return [json.loads(line) for line in lines[offset : offset + PER_PAGE] if line.strip()]


def _balance(report: dict[str, Any] | None) -> tuple[str | None, dict[str, dict[str, int]]]:
    for name in ("label_distribution", "tool_distribution"):
        if report and report.get(name):
            return ("label" if name == "label_distribution" else "tool"), report[name]
    return None, {}


@router.get("/datasets/{dataset_id}", name="console_dataset")
def dataset_page(
    request: Request,
    session: SessionDep,
    user: auth.ConsoleUserDep,
    dataset_id: str,
    offset: Annotated[int, Query(ge=0, le=10**6)] = 0,
) -> Response:
    ds = synthetic_datasets.to_public(
        synthetic_datasets.get_dataset(session=session, org=user.org, dataset_id=dataset_id)
    )
    kind, balance = _balance(ds.report)
    rows = _sample(session, user, ds.training_file, offset)
    total = (ds.report or {}).get("train", 0)
    context = _live_context(ds) | {
        "csrf": user.csrf,
        "balance_kind": kind,
        "balance": balance,
        "balance_max": max([sum(v.values()) for v in balance.values()] or [1]),
        "rows": rows,
        "offset": offset,
        "next_offset": offset + PER_PAGE if offset + PER_PAGE < total else None,
        "prev_offset": max(offset - PER_PAGE, 0) if offset else None,
    }
    return render(request, "dataset.html", context)


@router.get("/datasets/{dataset_id}/live", name="console_dataset_live")
def dataset_live(
    request: Request, session: SessionDep, user: auth.ConsoleUserDep, dataset_id: str
) -> Response:
    """The progress part, polled by htmx; once the dataset has ended, HX-Refresh reloads the page."""
    ds = synthetic_datasets.to_public(
        synthetic_datasets.get_dataset(session=session, org=user.org, dataset_id=dataset_id)
    )
    context = _live_context(ds)
    headers = {} if context["active"] else {"HX-Refresh": "true"}
    return render(request, "_dataset_live.html", context, headers=headers)
