from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from api.deps import CurrentOrg, HeavyOrg, SessionDep
from api.sse import event_stream, openapi_responses, wants_event_stream
from services import event_streams, plans, reports
from services import jobs as svc
from services.schemas.common import ListPublic
from services.schemas.jobs import CheckpointPublic, EventPublic, JobCreate, JobPublic
from services.schemas.plans import PlanPublic
from services.schemas.reports import JobReportPublic

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])


@router.post("", response_model=JobPublic)
def create_job(
    session: SessionDep,
    org: HeavyOrg,
    body: JobCreate,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> JobPublic:
    job, _ = svc.submit_job(session=session, org=org, config=body, idempotency_key=idempotency_key)
    return svc.to_public(job)


@router.post("/plan", response_model=PlanPublic)
def plan_job(session: SessionDep, org: HeavyOrg, body: JobCreate) -> PlanPublic:
    """Dry run: token counts, FLOPs, memory fit per GPU class, time and an itemised quote, with
    the budget check that create applies. Nothing is stored or started."""
    return plans.plan_job(session=session, org=org, config=body)


@router.get("", response_model=ListPublic[JobPublic])
def list_jobs(
    request: Request, session: SessionDep, org: CurrentOrg, after: str | None = None, limit: int = 20
) -> ListPublic[JobPublic]:
    # OpenAI filters with metadata[key]=value query parameters
    metadata = {
        k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")
    }
    rows, has_more = svc.list_jobs(
        session=session, org=org, after=after, limit=limit, metadata=metadata or None
    )
    return ListPublic.of([svc.to_public(j) for j in rows], has_more)


@router.get("/{fine_tuning_job_id}", response_model=JobPublic)
def retrieve_job(session: SessionDep, org: CurrentOrg, fine_tuning_job_id: str) -> JobPublic:
    return svc.to_public(svc.get_job(session=session, org=org, job_id=fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", response_model=JobPublic)
def cancel_job(session: SessionDep, org: CurrentOrg, fine_tuning_job_id: str) -> JobPublic:
    return svc.to_public(svc.cancel_job(session=session, org=org, job_id=fine_tuning_job_id))


@router.get(
    "/{fine_tuning_job_id}/events",
    response_model=ListPublic[EventPublic],
    responses=openapi_responses(
        "A page of events (JSON), or with stream=true / Accept: text/event-stream, Server-Sent Events"
    ),
)
def list_events(
    session: SessionDep,
    org: CurrentOrg,
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: int = 20,
    stream: bool = False,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(max_length=256)] = None,
) -> ListPublic[EventPublic] | StreamingResponse:
    """The job's events. As JSON (OpenAI's page): newest first, `after` the cursor of the previous
    page. As Server-Sent Events, with `stream=true` or `Accept: text/event-stream`: oldest first,
    strictly after the event named by the `Last-Event-ID` header (else `after`; an id that is not an
    event of this job is a 404), each `id: <event id>`, `event: fine_tuning.job.event`,
    `data: <event>`; then new events as they are written; once the job has ended and all are sent,
    `event: done` with the job, and the stream closes. `: keep-alive` comments fill silences; a
    stream that reaches EDGETUNE_EVENT_STREAM_MAX_S closes without `done`: reconnect with
    Last-Event-ID."""
    if stream or wants_event_stream(accept):
        frames = event_streams.open_job_stream(
            session=session, org=org, job_id=fine_tuning_job_id, last_event_id=last_event_id, after=after
        )
        return event_stream(frames)
    rows, has_more = svc.list_events(
        session=session, org=org, job_id=fine_tuning_job_id, after=after, limit=limit
    )
    return ListPublic.of([EventPublic.model_validate(e, from_attributes=True) for e in rows], has_more)


@router.get("/{fine_tuning_job_id}/checkpoints", response_model=ListPublic[CheckpointPublic])
def list_checkpoints(
    session: SessionDep, org: CurrentOrg, fine_tuning_job_id: str, after: str | None = None, limit: int = 10
) -> ListPublic[CheckpointPublic]:
    rows, has_more = svc.list_checkpoints(
        session=session, org=org, job_id=fine_tuning_job_id, after=after, limit=limit
    )
    data = [
        CheckpointPublic(
            id=c.id,
            created_at=c.created_at,
            fine_tuned_model_checkpoint=c.fine_tuned_model_checkpoint,
            fine_tuning_job_id=c.job_id,
            step_number=c.step_number,
            metrics=c.metrics,
        )
        for c in rows
    ]
    return ListPublic.of(data, has_more)


@router.get("/{fine_tuning_job_id}/report", response_model=JobReportPublic)
def job_report(session: SessionDep, org: CurrentOrg, fine_tuning_job_id: str) -> JobReportPublic:
    """The eval evidence: loss curve, base vs fine-tuned vs each artifact (with CIs), per-class
    scores and the gate's verdict; sections fill in as the stages finish."""
    report = reports.job_report(session=session, org=org, job_id=fine_tuning_job_id)
    return JobReportPublic.model_validate(report)


@router.get("/{fine_tuning_job_id}/report.html", response_class=HTMLResponse)
def job_report_html(session: SessionDep, org: CurrentOrg, fine_tuning_job_id: str) -> HTMLResponse:
    """The same report as one self-contained page (inline SVG plots)."""
    return HTMLResponse(reports.job_report_html(session=session, org=org, job_id=fine_tuning_job_id))
