"""The console's devices page (issue 18): the org's device agents (online or not, what each said of
itself), a form that makes one for a profile and shows its key once with the command to run on the
device, and the latest measurements on devices. The same service functions as /v1/device_agents
and /v1/device_benchmarks, with the org of the session."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from api.console import auth
from api.console.errors import ConsoleRoute
from api.console.pages import render
from api.deps import SessionDep
from export.profiles import load_profiles
from services import device_agents, device_benchmarks
from services.errors import AuthenticationError, EdgetuneError

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
RECENT = 25  # measurements shown


def _page(
    request: Request,
    session: SessionDep,
    user: auth.ConsoleUser,
    *,
    created: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    agents = [device_agents.agent_public(a) for a in device_agents.list_agents(session=session, org=user.org)]
    rows = device_benchmarks.list_benchmarks(session=session, org=user.org, artifact_id=None, limit=RECENT)
    context = {
        "csrf": user.csrf,
        "agents": agents,
        "benchmarks": [device_benchmarks.to_public(t) for t in rows],
        "profiles": [p.name for p in load_profiles().values() if p.format == "gguf" and p.available],
        "created": created,
        "error": error,
        "api_base": str(request.base_url).rstrip("/") + "/v1",
    }
    return render(request, "devices.html", context, status_code=status_code)


@router.get("/devices", name="console_devices")
def devices_page(request: Request, session: SessionDep, user: auth.ConsoleUserDep) -> Response:
    return _page(request, session, user)


@router.post("/devices/agents", name="console_create_agent")
def create_agent(
    request: Request,
    session: SessionDep,
    user: auth.CheckedUserDep,
    name: Annotated[str, Form(max_length=128)] = "",
    profile: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Make an agent and show its key on this response only (never stored, never shown again)."""
    try:
        if not name.strip():
            raise EdgetuneError("name: give the agent a name", param="name")
        agent, key = device_agents.create_agent(session=session, org=user.org, name=name, profile=profile)
    except AuthenticationError:
        raise
    except EdgetuneError as e:  # an unknown profile, an empty name: said on the page
        session.rollback()
        return _page(request, session, user, error=e.message, status_code=e.status_code)
    return _page(
        request, session, user, created={"id": agent.id, "name": agent.name, "profile": profile, "key": key}
    )
