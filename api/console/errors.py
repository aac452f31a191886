"""Errors in the console become pages, not JSON: the service layer's errors (the same classes the
REST API answers with) are shown with their status and message, and a missing or ended session
goes back to the sign-in form."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from api.console.pages import render
from services.errors import AuthenticationError, EdgetuneError

SESSION_COOKIE = "et_console"  # the signed session token (services/console_sessions.py)
COOKIE_PATH = "/console"

TITLES = {403: "Refused", 404: "Not found", 409: "Conflict", 429: "Slow down", 503: "Unavailable"}


class CsrfRefused(EdgetuneError):
    """A state-changing form without the session's CSRF token: it did not come from a console page."""

    status_code = 403
    type = "permission_error"

    def __init__(self) -> None:
        super().__init__(
            "The form's CSRF token is missing or wrong, so nothing was changed. Reload the page and "
            "send the form again.",
            param="csrf_token",
            code="csrf_token_invalid",
        )


def error_page(request: Request, error: EdgetuneError) -> Response:
    title = TITLES.get(error.status_code, "Something is wrong")
    context = {"status_code": error.status_code, "title": title, "message": error.message}
    return render(request, "error.html", context, status_code=error.status_code, headers=error.headers)


def to_sign_in(request: Request) -> Response:
    """Back to the sign-in form (htmx follows it in place, so tell it to load the whole page)."""
    target = str(request.url_for("console_sign_in"))
    if request.headers.get("HX-Request"):
        response: Response = Response(status_code=200, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


class ConsoleRoute(APIRoute):
    """Every console route: a service error (raised by the route or a dependency) is an HTML page
    with the error's status, an ended session a redirect to sign in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthenticationError:
                return to_sign_in(request)
            except RequestValidationError as e:  # a form field past its limit, a bad query value
                fields = ", ".join(".".join(str(p) for p in err["loc"][1:]) for err in e.errors())
                return error_page(request, EdgetuneError(f"Invalid value for: {fields}.", param=fields))
            except EdgetuneError as error:
                return error_page(request, error)

        return guarded
