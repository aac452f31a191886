"""The agent tools for any function-calling framework: their OpenAI schemas, and a call by name
with the model's JSON arguments as the body. Same definitions and functions as the MCP server."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request

from api.agent.tools import TOOLS, ToolContext, openai_tool, run_tool
from api.deps import CurrentOrg, SessionDep

router = APIRouter(prefix="/tools", tags=["agent tools"])


@router.get("")
def list_tools(shape: Literal["chat", "responses"] = "chat") -> dict[str, Any]:
    """`shape=chat` (default) is Chat Completions' `tools=[...]` entry; `responses` the Responses API's."""
    return {"object": "list", "data": [openai_tool(spec, shape) for spec in TOOLS.values()]}


@router.post("/{name}")
def call_tool(
    request: Request,
    session: SessionDep,
    org: CurrentOrg,
    name: str,
    arguments: Annotated[dict[str, Any] | None, Body()] = None,
) -> dict[str, Any]:
    """Run one tool; the response is its output model, the MCP tool's structuredContent."""
    ctx = ToolContext(session, org, str(request.base_url).rstrip("/"))
    return run_tool(ctx, name, arguments or {}).model_dump(mode="json")
