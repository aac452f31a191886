"""Who is signed in to the console, and the CSRF check of every state-changing form.

The session cookie holds a signed token (services/console_sessions.py), HttpOnly (no script reads
it), SameSite=Strict (no other site's page sends it) and Secure when the console is served over
HTTPS. Forms carry the session's CSRF token as a hidden field; the sign-in form, before there is a
session, a random value also set as a cookie (double submit)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, Request, Response

from api.console.errors import COOKIE_PATH, SESSION_COOKIE, CsrfRefused
from api.deps import SessionDep
from infra.models import Org
from services import console_sessions, limits

SIGN_IN_COOKIE = "et_console_sign_in"  # the sign-in form's double-submit CSRF value


@dataclass(frozen=True)
class ConsoleUser:
    org: Org
    token: str
    csrf: str  # put in every form the page renders


def console_user(request: Request, session: SessionDep) -> ConsoleUser:
    """The signed-in org; an absent, forged, old or revoked-key session is a 401 the console
    route turns into the sign-in page. Console requests count against the org's request rate."""
    token = request.cookies.get(SESSION_COOKIE, "")
    org = console_sessions.org_of(session=session, token=token)
    limits.check_rate(org)
    return ConsoleUser(org=org, token=token, csrf=console_sessions.csrf_token(token))


ConsoleUserDep = Annotated[ConsoleUser, Depends(console_user)]


def checked_user(user: ConsoleUserDep, csrf_token: Annotated[str, Form()] = "") -> ConsoleUser:
    """The signed-in org, for a form that changes something: refused (403) without its CSRF token."""
    if not console_sessions.csrf_ok(user.token, csrf_token):
        raise CsrfRefused()
    return user


CheckedUserDep = Annotated[ConsoleUser, Depends(checked_user)]


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def new_sign_in_csrf() -> str:
    return secrets.token_urlsafe(24)


def remember_sign_in_csrf(request: Request, response: Response, value: str) -> None:
    set_cookie(request, response, SIGN_IN_COOKIE, value, max_age=3600)


def sign_in_csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(SIGN_IN_COOKIE, "")
    return bool(cookie and submitted) and secrets.compare_digest(cookie, submitted)


def start_session(request: Request, response: Response, token: str) -> None:
    set_cookie(request, response, SESSION_COOKIE, token, max_age=console_sessions.SESSION_MAX_AGE_S)
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
