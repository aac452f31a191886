from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from api.deps import SessionDep
from api.schemas.billing import WebhookAckPublic
from api.services import billing as svc

router = APIRouter(prefix="/webhooks", tags=["billing"])


async def raw_body(request: Request) -> bytes:
    # The signature covers the exact bytes Stripe sent: never verify a re-serialised body.
    return await request.body()


@router.post("/stripe", response_model=WebhookAckPublic)
def stripe_webhook(
    session: SessionDep,
    body: Annotated[bytes, Depends(raw_body)],
    stripe_signature: Annotated[str | None, Header()] = None,
) -> WebhookAckPublic:
    """Stripe's deliveries: verified on the raw body (400 if not), recorded once by event id."""
    return svc.handle_stripe_webhook(session=session, payload=body, signature=stripe_signature)
