from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


# What one push of pending ledger rows to the billing provider did
class BillingPushPublic(BaseModel):
    object: Literal["billing.push"] = "billing.push"
    provider: str | None  # None: billing is off, nothing was sent
    pushed: int = 0
    zero_value: int = 0  # rows worth less than one micro-USD: marked pushed, nothing sent
    customers_created: int = 0
    rejected: int = 0  # rows the provider refused: left pending, retried by the next push
    pending: int = 0  # rows still unsent after this push, across all orgs
    error: str | None = None


# The answer to a webhook delivery; Stripe only looks at the status code
class WebhookAckPublic(BaseModel):
    received: Literal[True] = True
    id: str
    type: str
    duplicate: bool = False
