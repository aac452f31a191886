from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import console
from api.agent.mcp_server import build_mcp_server, mcp_route
from api.errors import install_error_handlers
from api.routes import (
    api_keys,
    artifacts,
    chat,
    device_agents,
    files,
    jobs,
    models,
    operator,
    registry,
    synthetic_datasets,
    tools,
    usage,
    webhooks,
)


def create_app() -> FastAPI:
    mcp = build_mcp_server()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mcp.session_manager.run():  # a mounted app's own lifespan never runs
            yield

    app = FastAPI(
        title="edgetune",
        version="0.1.0",
        description="Fine-tuning as a service for Liquid AI's LFM models (OpenAI-compatible).",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (
        files, jobs, models, artifacts, registry, usage, webhooks, synthetic_datasets, api_keys, device_agents
    ):  # fmt: skip
        app.include_router(module.router, prefix="/v1")

    app.include_router(tools.router, prefix="/v1")
    app.include_router(operator.router, prefix="/v1")  # the operator's token, not a tenant's key
    app.include_router(chat.router, prefix="/v1")  # chat completions on the org's fine-tuned GGUFs
    app.router.routes.append(mcp_route(mcp))  # MCP over streamable HTTP at /mcp
    console.install(app)  # the web console at /console (HTML pages; not in the OpenAPI spec)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
