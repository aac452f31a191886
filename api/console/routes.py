"""The console's pages: sign in and out, the jobs list, a job's page with its live part, and
artifact downloads. Each calls the service functions the REST routes call, with the org of the
session cookie; nothing here goes through the REST API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from markupsafe import Markup

from api.console import auth
from api.console.errors import ConsoleRoute
from api.console.pages import render
from api.deps import SessionDep
from api.sse import event_stream
from domain.lists import TERMINAL
from eval.report import gate_section, loss_svg, per_class_table, prompting_html, scores_svg
from infra.settings import get_settings
from services import artifacts, console_sessions, event_streams, job_overview, jobs
from services.errors import AuthenticationError

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
JOBS_PER_PAGE = 25


@router.get("/signin", name="console_sign_in")
def sign_in_form(request: Request) -> Response:
    value = auth.new_sign_in_csrf()
    response = render(request, "sign_in.html", {"sign_in_csrf": value})
    auth.remember_sign_in_csrf(request, response, value)
    return response


@router.post("/signin", name="console_sign_in_submit")
def sign_in(
    request: Request,
    session: SessionDep,
    api_key: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    value = auth.new_sign_in_csrf()
    error = None
    if not auth.sign_in_csrf_ok(request, csrf_token):
        error = "The form had expired or did not come from this page; sign in again."
    else:
        try:
            token = console_sessions.sign_in(session=session, api_key=api_key)
        except AuthenticationError as e:
            error = e.message
    if error is not None:
        response = render(request, "sign_in.html", {"sign_in_csrf": value, "error": error}, status_code=401)
        auth.remember_sign_in_csrf(request, response, value)
        return response
    redirect = RedirectResponse(str(request.url_for("console_jobs")), status_code=303)
    auth.start_session(request, redirect, token)
    return redirect


@router.post("/signout", name="console_sign_out", dependencies=[Depends(auth.checked_user)])
def sign_out(request: Request) -> Response:
    redirect = RedirectResponse(str(request.url_for("console_sign_in")), status_code=303)
    auth.end_session(redirect)
    return redirect


@router.get("/", name="console_jobs")
def jobs_page(
    request: Request, session: SessionDep, user: auth.ConsoleUserDep, after: str | None = None
) -> Response:
    rows, has_more = jobs.list_jobs(session=session, org=user.org, after=after, limit=JOBS_PER_PAGE)
    public = [jobs.to_public(j) for j in rows]
    context = {"csrf": user.csrf, "jobs": public, "next_after": public[-1].id if has_more else None}
    return render(request, "jobs.html", context)


# The live part follows the job's event stream (static/live.js): each event re-fetches it. Polling
# stays as a slow fallback for a browser or proxy that drops the stream.
FALLBACK_POLLS = 20


def _live_context(overview: job_overview.JobOverviewPublic) -> dict[str, Any]:
    job = overview.job
    return {
        "job": job,
        "stages": overview.stages,
        "active": job.status not in TERMINAL,
        "poll_s": get_settings().event_stream_poll_s * 2 * FALLBACK_POLLS,
        # eval/report.py builds the SVG from numbers only, escaping every label
        "loss_svg": Markup(loss_svg(overview.report["loss_curve"])),
    }


@router.get("/jobs/{job_id}", name="console_job")
def job_page(request: Request, session: SessionDep, user: auth.ConsoleUserDep, job_id: str) -> Response:
    overview = job_overview.job_overview(session=session, org=user.org, job_id=job_id)
    report = overview.report
    newest, _ = jobs.list_events(session=session, org=user.org, job_id=job_id, after=None, limit=1)
    events = request.url_for("console_job_events", job_id=job_id)
    context = _live_context(overview) | {
        # the stream starts after the newest event the page already shows
        "events_url": str(events.include_query_params(after=newest[0].id)) if newest else str(events),
        "csrf": user.csrf,
        "overview": overview,
        "report": report,
        "gate_html": Markup(gate_section(report["gate"])),
        "scores_svg": Markup(scores_svg(report["scores"])),
        "prompting_html": Markup(prompting_html(report.get("prompting"))),
        "per_class_html": Markup(per_class_table(report["per_class"])),
    }
    return render(request, "job.html", context)


@router.get("/jobs/{job_id}/live", name="console_job_live")
def job_live(request: Request, session: SessionDep, user: auth.ConsoleUserDep, job_id: str) -> Response:
    """The live part of the job page, polled by htmx; once the job has ended, HX-Refresh reloads
    the whole page (eval, bill, artifacts) and the polling stops with it."""
    overview = job_overview.job_overview(session=session, org=user.org, job_id=job_id)
    context = _live_context(overview)
    headers = {} if context["active"] else {"HX-Refresh": "true"}
    return render(request, "_live.html", context, headers=headers)


@router.get("/jobs/{job_id}/events", name="console_job_events")
def job_events(
    session: SessionDep,
    user: auth.ConsoleUserDep,
    job_id: str,
    after: Annotated[str | None, Query(max_length=256)] = None,
    last_event_id: Annotated[str | None, Header(max_length=256)] = None,
) -> StreamingResponse:
    """The job's event stream for the console (the session cookie instead of a key): the same
    Server-Sent Events as `GET /v1/fine_tuning/jobs/{id}/events?stream=true`."""
    frames = event_streams.open_job_stream(
        session=session, org=user.org, job_id=job_id, last_event_id=last_event_id, after=after
    )
    return event_stream(frames)


@router.get("/artifacts/{artifact_id}/content", name="console_artifact_content")
def artifact_content(session: SessionDep, user: auth.ConsoleUserDep, artifact_id: str) -> StreamingResponse:
    a = artifacts.get_artifact(session=session, org=user.org, artifact_id=artifact_id)
    headers = {
        "Content-Disposition": f'attachment; filename="{a.filename}"',
        "Content-Length": str(a.bytes),
        "X-Edgetune-Sha256": a.sha256,
    }
    return StreamingResponse(
        artifacts.stream(a, None), media_type="application/octet-stream", headers=headers
    )


@router.get("/artifacts/{artifact_id}/manifest", name="console_artifact_manifest")
def artifact_manifest(session: SessionDep, user: auth.ConsoleUserDep, artifact_id: str) -> JSONResponse:
    a = artifacts.get_artifact(session=session, org=user.org, artifact_id=artifact_id)
    return JSONResponse(a.manifest, headers={"Cache-Control": "no-store"})
