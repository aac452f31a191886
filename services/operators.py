"""Who may call the operator's routes (/v1/operator/*): the holder of settings.operator_token."""

from __future__ import annotations

import hmac

from infra.settings import get_settings
from services.errors import AuthenticationError, NotFound


def authenticate_operator(authorization: str | None) -> None:
    """Raise unless `authorization` is 'Bearer <operator token>'. With no token configured the
    operator's routes do not exist for anyone (404), so a tenant learns nothing of them."""
    token = get_settings().operator_token
    if not token:
        raise NotFound("Not Found")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise AuthenticationError("This route needs the operator's token.", code="invalid_operator_token")
