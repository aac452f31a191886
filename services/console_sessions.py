"""Web console sign-in: an API key is checked once (services/api_keys.py) and traded for a signed
session token naming the key's id, never the key itself, so the browser holds nothing that works
against the REST API.

Each request re-reads the key row: revoking or expiring the key ends every console session made
with it, exactly as it ends the key's API access. The token is `<key id>.<issued at>.<HMAC>`
under EDGETUNE_CONSOLE_SECRET (a random secret per process when unset: sessions then end when the
API restarts, and several API processes need the setting). Forms carry a CSRF token derived from
the session token (HMAC under another label), so it needs no storage and a page of another site,
which cannot read the HttpOnly cookie, cannot forge it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.models import ApiKey, Org, now
from infra.settings import get_settings
from services.api_keys import authenticate, hash_key, status_of
from services.errors import AuthenticationError

SESSION_MAX_AGE_S = 12 * 3600  # a console session lasts a working day; the cookie's Max-Age too
SIGNED_OUT = "Your console session has ended; sign in again."


@lru_cache(maxsize=1)
def _process_secret() -> bytes:
    return secrets.token_bytes(32)


def _secret() -> bytes:
    configured = get_settings().console_secret
    return configured.encode() if configured else _process_secret()


def _mac(label: str, payload: str) -> str:
    digest = hmac.new(_secret(), f"{label}:{payload}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign_in(*, session: Session, api_key: str) -> str:
    """A session token for a valid key; the key's own 401 (`invalid_api_key`, `api_key_expired`)
    otherwise, with the message the API gives."""
    authenticate(session=session, authorization=f"Bearer {api_key.strip()}")
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(api_key.strip())))
    assert row is not None  # authenticate just found it
    payload = f"{row.id}.{now()}"
    return f"{payload}.{_mac('session', payload)}"


def org_of(*, session: Session, token: str | None) -> Org:
    """The org of a session token whose signature holds, younger than SESSION_MAX_AGE_S, made with
    a key that is still active; else a 401."""
    key_id, issued, mac = (token or "").rsplit(".", 2) if (token or "").count(".") == 2 else ("", "", "")
    payload = f"{key_id}.{issued}"
    if not mac or not hmac.compare_digest(mac, _mac("session", payload)) or not issued.isdigit():
        raise AuthenticationError(SIGNED_OUT, code="console_session_invalid")
    row = session.get(ApiKey, key_id)
    if now() - int(issued) > SESSION_MAX_AGE_S or row is None or status_of(row) != "active":
        raise AuthenticationError(SIGNED_OUT, code="console_session_invalid")
    org = session.get(Org, row.org_id)
    assert org is not None  # FK guarantees it
    return org


def csrf_token(token: str) -> str:
    """The CSRF token of a session (the same for every form of that session)."""
    return _mac("csrf", token)


def csrf_ok(token: str | None, submitted: str | None) -> bool:
    return bool(token and submitted) and hmac.compare_digest(csrf_token(token or ""), submitted or "")
