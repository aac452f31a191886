"""Device agents and benchmarks (issue 18). The org's key manages agents and queues benchmarks;
an agent's own key (services/device_agents.py) opens only /v1/device_agent/*."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse

from api.deps import CurrentOrg, SessionDep
from infra.models import DeviceAgent
from services import device_agents, device_benchmarks
from services.schemas.common import ListPublic
from services.schemas.device_agents import (
    BenchmarkFailure,
    BenchmarkResult,
    BenchmarkTask,
    DeviceAgentCreate,
    DeviceAgentCreated,
    DeviceAgentPublic,
    DeviceBenchmarkCreate,
    DeviceBenchmarkPublic,
    DeviceFacts,
)

router = APIRouter(tags=["device_agents"])


def get_current_agent(
    session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> DeviceAgent:
    return device_agents.authenticate_agent(session=session, authorization=authorization)


CurrentAgent = Annotated[DeviceAgent, Depends(get_current_agent)]


@router.post("/device_agents", response_model=DeviceAgentCreated)
def create_device_agent(session: SessionDep, org: CurrentOrg, body: DeviceAgentCreate) -> DeviceAgentCreated:
    agent, key = device_agents.create_agent(session=session, org=org, name=body.name, profile=body.profile)
    return DeviceAgentCreated(**device_agents.agent_public(agent).model_dump(), key=key)


@router.get("/device_agents", response_model=ListPublic[DeviceAgentPublic])
def list_device_agents(
    session: SessionDep, org: CurrentOrg, profile: str | None = None
) -> ListPublic[DeviceAgentPublic]:
    rows = device_agents.list_agents(session=session, org=org, profile=profile)
    return ListPublic.of([device_agents.agent_public(a) for a in rows], False)


@router.delete("/device_agents/{agent_id}", response_model=DeviceAgentPublic)
def revoke_device_agent(session: SessionDep, org: CurrentOrg, agent_id: str) -> DeviceAgentPublic:
    return device_agents.agent_public(device_agents.revoke_agent(session=session, org=org, agent_id=agent_id))


@router.post("/device_benchmarks", response_model=DeviceBenchmarkPublic)
def create_device_benchmark(
    session: SessionDep, org: CurrentOrg, body: DeviceBenchmarkCreate
) -> DeviceBenchmarkPublic:
    return device_benchmarks.to_public(
        device_benchmarks.create_benchmark(session=session, org=org, body=body)
    )


@router.get("/device_benchmarks", response_model=ListPublic[DeviceBenchmarkPublic])
def list_device_benchmarks(
    session: SessionDep, org: CurrentOrg, artifact_id: str | None = None, limit: int = 20
) -> ListPublic[DeviceBenchmarkPublic]:
    rows = device_benchmarks.list_benchmarks(session=session, org=org, artifact_id=artifact_id, limit=limit)
    return ListPublic.of([device_benchmarks.to_public(t) for t in rows], False)


@router.get("/device_benchmarks/{benchmark_id}", response_model=DeviceBenchmarkPublic)
def retrieve_device_benchmark(
    session: SessionDep, org: CurrentOrg, benchmark_id: str
) -> DeviceBenchmarkPublic:
    task = device_benchmarks.get_benchmark(session=session, org=org, benchmark_id=benchmark_id)
    return device_benchmarks.to_public(task)


# The agent's side: its own key only.


@router.post("/device_agent/hello", response_model=DeviceAgentPublic)
def agent_hello(session: SessionDep, agent: CurrentAgent, body: DeviceFacts) -> DeviceAgentPublic:
    return device_agents.agent_public(device_agents.hello(session=session, agent=agent, facts=body))


@router.post(
    "/device_agent/tasks/claim", response_model=BenchmarkTask, responses={204: {"description": "none"}}
)
def agent_claim(session: SessionDep, agent: CurrentAgent, request: Request) -> BenchmarkTask | Response:
    stream_url = str(request.url_for("agent_task_artifact", task_id="TASK")).replace("TASK", "{id}")
    task = device_benchmarks.claim(session=session, agent=agent, stream_url=stream_url)
    return task if task is not None else Response(status_code=204)


@router.post("/device_agent/tasks/{task_id}/heartbeat", response_model=DeviceBenchmarkPublic)
def agent_heartbeat(session: SessionDep, agent: CurrentAgent, task_id: str) -> DeviceBenchmarkPublic:
    return device_benchmarks.to_public(
        device_benchmarks.heartbeat(session=session, agent=agent, task_id=task_id)
    )


@router.post("/device_agent/tasks/{task_id}/result", response_model=DeviceBenchmarkPublic)
def agent_result(
    session: SessionDep, agent: CurrentAgent, task_id: str, body: BenchmarkResult
) -> DeviceBenchmarkPublic:
    task = device_benchmarks.finish(session=session, agent=agent, task_id=task_id, result=body, failure=None)
    return device_benchmarks.to_public(task)


@router.post("/device_agent/tasks/{task_id}/failure", response_model=DeviceBenchmarkPublic)
def agent_failure(
    session: SessionDep, agent: CurrentAgent, task_id: str, body: BenchmarkFailure
) -> DeviceBenchmarkPublic:
    task = device_benchmarks.finish(
        session=session, agent=agent, task_id=task_id, result=None, failure=body.message
    )
    return device_benchmarks.to_public(task)


@router.get("/device_agent/tasks/{task_id}/artifact", name="agent_task_artifact")
def agent_task_artifact(session: SessionDep, agent: CurrentAgent, task_id: str) -> StreamingResponse:
    task = device_benchmarks.task_file(session=session, agent=agent, task_id=task_id)
    headers = {"Content-Length": str(task.bytes), "X-Edgetune-Sha256": task.sha256}
    return StreamingResponse(
        device_benchmarks.stream_file(task), media_type="application/octet-stream", headers=headers
    )
