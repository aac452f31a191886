from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from api.deps import SessionDep
from services import billing as svc
from services.errors import InvalidRequest
from services.schemas.billing import WebhookAckPublic

router = APIRouter(prefix="/webhooks", tags=["billing"])


async def raw_body(request: Request) -> bytes:
    # The signature covers the exact bytes Stripe sent: never verify a re-serialised body.
    return await request.body()


def _malformed(event: object) -> str | None:
    """Where a parsed body is not shaped like a Stripe event (an object whose data.object is an
    object), or None; checked before the SDK sees it, which assumes that shape."""
    if not isinstance(event, dict):
        return "body"
    data = event.get("data", {})
    if not isinstance(data, dict):
        return "data"
    obj = data.get("object", {})
    if not isinstance(obj, dict):
        return "data.object"
    if not isinstance(obj.get("id", ""), str):  # stored as the event's object id
        return "data.object.id"
    for key in ("id", "type"):
        if not isinstance(event.get(key, ""), str):
            return key
    created = event.get("created", 0)
    if created is not None and (not isinstance(created, int) or not 0 <= created <= 2**62):
        return "created"
    return None


@router.post("/stripe", response_model=WebhookAckPublic)
def stripe_webhook(
    session: SessionDep,
    body: Annotated[bytes, Depends(raw_body)],
    stripe_signature: Annotated[str | None, Header()] = None,
) -> WebhookAckPublic:
    """Stripe's deliveries: verified on the raw body (400 if not), recorded once by event id."""
    try:
        event = json.loads(body)
    except ValueError:
        event = {}  # not JSON: the signature check says why
    if (param := _malformed(event)) is not None:
        raise InvalidRequest(
            f"the body is not a Stripe event ({param} has the wrong type)",
            param=param,
            code="invalid_payload",
        )
    return svc.handle_stripe_webhook(session=session, payload=body, signature=stripe_signature)
