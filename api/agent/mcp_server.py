"""The agent tools over MCP (the `mcp` SDK v2): streamable HTTP at /mcp inside the API, and stdio
for `edgetune mcp`. Each MCP tool is a `tools.TOOLS` entry: its input model is the argument
schema, its output model the structured result, and a service error becomes an `isError` result
naming the field. Auth is the API key: the `Authorization: Bearer` header on HTTP (checked before
MCP sees the request, and again per call to find the org), `EDGETUNE_API_KEY` on stdio."""

from __future__ import annotations

import os
from typing import Any

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.agent.tools import TOOLS, ToolContext, ToolSpec, error_text, run_tool
from infra.db import get_sessionmaker
from infra.settings import DEFAULT_API_URL, get_settings
from services import limits
from services.errors import AuthenticationError, EdgetuneError
from services.orgs import authenticate

MCP_PATH = "/mcp"
INSTRUCTIONS = (
    "edgetune fine-tunes Liquid AI LFM models for on-device use. Workflow: upload_training_file (or "
    "describe a task) -> plan_finetune (free dry run: quote, fit, time) -> create_finetune_job with an "
    "idempotency_key and a budget_usd cap -> poll get_job until succeeded/failed/cancelled -> "
    "list_artifacts -> get_artifact_download_url. Reuse the idempotency key when retrying a create."
)


def _authorization(ctx: Context[Any, Any]) -> str | None:
    headers = ctx.headers
    if headers is not None:  # HTTP: this request's own credentials
        return headers.get("authorization")
    key = os.environ.get("EDGETUNE_API_KEY")  # stdio: the key the server process was started with
    return f"Bearer {key}" if key else None


def _api_url(ctx: Context[Any, Any]) -> str:
    request = ctx.request_context.request
    if isinstance(request, Request):
        return str(request.base_url).rstrip("/")
    return os.environ.get("EDGETUNE_API_URL", DEFAULT_API_URL).rstrip("/")


def _call(spec: ToolSpec, ctx: Context[Any, Any], arguments: dict[str, Any]) -> BaseModel:
    # Sync on purpose: the SDK runs sync tools in a worker thread, like FastAPI's sync routes.
    with get_sessionmaker()() as session:
        try:
            org = authenticate(session=session, authorization=_authorization(ctx))
            limits.check_rate(org)
            return run_tool(ToolContext(session, org, _api_url(ctx)), spec.name, arguments)
        except EdgetuneError as exc:
            raise ToolError(error_text(exc)) from None


def _mcp_tool(spec: ToolSpec) -> Tool:
    """An MCP tool whose arguments are the spec's input model's fields, flat, as the agent sees them
    in /v1/tools too (the SDK's usual route, a function signature, would restate every field)."""
    # named like the input model, so the SDK's validation errors read "... for CreateFinetuneJobInput"
    arg_model: type[ArgModelBase] = type(spec.input.__name__, (spec.input, ArgModelBase), {})

    def call(ctx: Context[Any, Any], **arguments: Any) -> BaseModel:
        return _call(spec, ctx, arguments)

    return Tool(
        fn=call,
        name=spec.name,
        title=None,
        description=spec.description,
        parameters=arg_model.model_json_schema(by_alias=True),
        fn_metadata=FuncMetadata(arg_model=arg_model, output_model=spec.output),
        is_async=False,
        context_kwarg="ctx",
        annotations=ToolAnnotations(
            read_only_hint=spec.read_only, destructive_hint=spec.destructive, open_world_hint=False
        ),
    )


def build_mcp_server() -> MCPServer:
    """A fresh server per app: its session manager can run only once."""
    return MCPServer(
        "edgetune",
        instructions=INSTRUCTIONS,
        version="0.1.0",
        tools=[_mcp_tool(spec) for spec in TOOLS.values()],
    )


def _check_key(authorization: str | None) -> None:
    with get_sessionmaker()() as session:
        authenticate(session=session, authorization=authorization)


def check_stdio_key() -> None:
    """Fail at start, not at the first tool call, when the stdio server's key is missing or wrong."""
    key = os.environ.get("EDGETUNE_API_KEY")
    _check_key(f"Bearer {key}" if key else None)


class RequireApiKey:
    """401 in the API's own error shape before MCP reads a byte, so no tool is listed to a caller
    without a valid key. A class, not a closure: Starlette's Route treats a plain function as a
    GET-only request handler, and an ASGI object as an app taking every method."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await anyio.to_thread.run_sync(_check_key, Headers(scope=scope).get("authorization"))
            except AuthenticationError as exc:
                response = JSONResponse(exc.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _transport_security() -> TransportSecuritySettings:
    """DNS-rebinding protection: localhost always, plus EDGETUNE_MCP_ALLOWED_HOSTS behind a real
    hostname (otherwise every request there is a 421)."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    hosts += [h.strip() for h in get_settings().mcp_allowed_hosts.split(",") if h.strip()]
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins)


def mcp_route(server: MCPServer) -> Route:
    """The one route /mcp (a mount at "/" would also answer every unknown path). Stateless with
    JSON responses: no session to pin to one API replica, and nothing here streams."""
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        transport_security=_transport_security(),
    )
    return Route(MCP_PATH, endpoint=RequireApiKey(app))
