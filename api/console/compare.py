"""Two jobs side by side: what each scored (the same rows as each job page's eval table) and what
each cost, planned and billed. Both are read with the signed-in org, so another org's id is the
same 404 page as everywhere."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.console import auth
from api.console.errors import ConsoleRoute
from api.console.pages import render
from api.deps import SessionDep
from services import job_overview

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
JobId = Annotated[str, Query(min_length=1, max_length=256)]


@router.get("/compare", name="console_compare")
def compare_page(
    request: Request, session: SessionDep, user: auth.ConsoleUserDep, a: JobId, b: JobId
) -> Response:
    left, right = (job_overview.job_overview(session=session, org=user.org, job_id=j) for j in (a, b))
    subjects = list(dict.fromkeys(s["subject"] for o in (left, right) for s in o.report["scores"]))
    scores = [{s["subject"]: s for s in o.report["scores"]} for o in (left, right)]
    context = {"csrf": user.csrf, "jobs": [left, right], "subjects": subjects, "scores": scores}
    return render(request, "compare.html", context)
