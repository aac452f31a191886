"""The web console at /console: server-rendered pages (Jinja2 templates in templates/) over the
service layer, with htmx (static/, vendored) refreshing a running job's page; no build step and
no JavaScript of our own. `install` mounts it on the API app."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.console import compare, datasets, devices, job_form, playground, registry, routes
from api.console.pages import STATIC_DIR


def install(app: FastAPI) -> None:
    # the form's /console/jobs/new before the job page's /console/jobs/{job_id}
    app.include_router(job_form.router)
    app.include_router(routes.router)
    app.include_router(registry.router)
    app.include_router(compare.router)
    app.include_router(playground.router)
    app.include_router(datasets.router)
    app.include_router(devices.router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console_static")

    @app.get("/console", include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)
