"""The console's registry and usage pages: the org's registered models with their versions and
aliases (moving an alias such as `prod` is the service's set_alias, so a gate-failed version is
refused with its message), and the usage ledger by day and by job beside the invoice so far and
the budget left."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from api.console import auth
from api.console.errors import ConsoleRoute
from api.console.pages import render
from api.deps import SessionDep
from services import model_registry, spend_budgets, usage
from services.errors import AuthenticationError, EdgetuneError

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
MAX_ROWS = 100  # models or versions on one page: an org's registry is small


@router.get("/registry", name="console_registry")
def registry_page(request: Request, session: SessionDep, user: auth.ConsoleUserDep) -> Response:
    rows, _ = model_registry.list_models(session=session, org=user.org, after=None, limit=MAX_ROWS)
    context = {"csrf": user.csrf, "models": model_registry.models_to_public(session, rows)}
    return render(request, "registry.html", context)


def _model_page(
    request: Request,
    session: SessionDep,
    user: auth.ConsoleUser,
    name: str,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    model = model_registry.models_to_public(
        session, [model_registry.get_model(session=session, org=user.org, name=name)]
    )
    rows, _ = model_registry.list_versions(
        session=session, org=user.org, name=name, after=None, limit=MAX_ROWS
    )
    context = {
        "csrf": user.csrf,
        "model": model[0],
        "versions": model_registry.versions_to_public(session, rows),
        "error": error,
    }
    return render(request, "registry_model.html", context, status_code=status_code)


@router.get("/registry/{name}", name="console_registry_model")
def registry_model_page(
    request: Request, session: SessionDep, user: auth.ConsoleUserDep, name: str
) -> Response:
    return _model_page(request, session, user, name)


@router.post("/registry/{name}/aliases", name="console_set_alias")
def set_alias(
    request: Request,
    session: SessionDep,
    user: auth.CheckedUserDep,
    name: str,
    alias: Annotated[str, Form(max_length=64)] = "prod",
    version: Annotated[int, Form(ge=1, le=2**31 - 1)] = 1,
) -> Response:
    try:
        model_registry.set_alias(session=session, org=user.org, name=name, alias=alias, version=version)
    except AuthenticationError:
        raise
    except EdgetuneError as e:  # a gate-failed version (409), a bad alias name (400): said on the page
        session.rollback()
        return _model_page(request, session, user, name, error=e.message, status_code=e.status_code)
    return RedirectResponse(str(request.url_for("console_registry_model", name=name)), status_code=303)


@router.get("/usage", name="console_usage")
def usage_page(request: Request, session: SessionDep, user: auth.ConsoleUserDep) -> Response:
    """This calendar month (UTC), as GET /v1/usage and /v1/usage/invoice_preview give it."""
    org = user.org
    context = {
        "csrf": user.csrf,
        "by_day": usage.get_usage(session=session, org=org, group_by="day", start_time=None, end_time=None),
        "by_job": usage.get_usage(session=session, org=org, group_by="job", start_time=None, end_time=None),
        "invoice": usage.invoice_preview(session=session, org=org),
        "budget_usd": org.budget_usd,
        "remaining_usd": spend_budgets.remaining_usd(session, org),
    }
    return render(request, "usage.html", context)
