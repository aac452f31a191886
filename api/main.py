from __future__ import annotations

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import artifacts, files, jobs, models


def create_app() -> FastAPI:
    app = FastAPI(
        title="edgetune",
        version="0.1.0",
        description="Fine-tuning as a service for Liquid AI's LFM models (OpenAI-compatible).",
    )
    install_error_handlers(app)
    for module in (files, jobs, models, artifacts):
        app.include_router(module.router, prefix="/v1")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
