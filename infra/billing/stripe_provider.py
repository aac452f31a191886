"""Stripe as the billing provider: customers, Billing Meter events (the current usage API; legacy
usage records were removed in 2025-03-31.basil) and signed webhooks, through the official SDK.

Every write carries a fixed idempotency key derived from edgetune's own ids, so a retried call
(a crashed pusher, a network error) replays Stripe's first answer instead of billing again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stripe

from infra.billing.provider import BillingEvent, InvalidWebhook, UsagePush, UsageRejected

# The invoice fields recorded from invoice.* events; the rest of the object is not kept.
INVOICE_FIELDS = (
    "status",
    "amount_due",
    "amount_paid",
    "currency",
    "attempt_count",
    "period_start",
    "period_end",
)


def customer_idempotency_key(org_id: str) -> str:
    return f"edgetune-customer-{org_id}"


def meter_event_idempotency_key(ledger_id: int) -> str:
    return f"edgetune-usage-{ledger_id}"


def meter_event_identifier(ledger_id: int) -> str:
    # Stripe also de-duplicates meter events by identifier (rolling 24 h): the ledger row's id.
    return f"usage_record_{ledger_id}"


class StripeBillingProvider:
    name = "stripe"

    def __init__(
        self, *, api_key: str, api_base: str | None, webhook_secret: str | None, meter_event_name: str
    ) -> None:
        base_addresses: Any = {"api": api_base} if api_base else {}
        self._client = stripe.StripeClient(api_key, base_addresses=base_addresses, max_network_retries=2)
        self._webhook_secret = webhook_secret
        self._event_name = meter_event_name

    def ensure_customer(self, *, org_id: str, org_name: str) -> str:
        with _refusals_as_rejected():
            customer = self._client.v1.customers.create(
                params={"name": org_name, "metadata": {"edgetune_org_id": org_id}},
                options={"idempotency_key": customer_idempotency_key(org_id)},
            )
        return str(customer.id)

    def push_usage(self, push: UsagePush) -> None:
        with _refusals_as_rejected():
            self._client.v1.billing.meter_events.create(
                params={
                    "event_name": self._event_name,
                    "identifier": meter_event_identifier(push.ledger_id),
                    "payload": {"stripe_customer_id": push.customer_id, "value": str(push.value)},
                    "timestamp": push.timestamp,
                },
                options={"idempotency_key": meter_event_idempotency_key(push.ledger_id)},
            )

    def parse_webhook(self, payload: bytes, signature: str | None) -> BillingEvent:
        if not self._webhook_secret:
            raise InvalidWebhook("no webhook secret is configured (EDGETUNE_STRIPE_WEBHOOK_SECRET)")
        try:
            stripe.Webhook.construct_event(payload, signature or "", self._webhook_secret)
        except stripe.SignatureVerificationError as exc:
            raise InvalidWebhook(f"signature verification failed: {exc.user_message or exc}") from None
        except ValueError as exc:  # the body is not JSON
            raise InvalidWebhook(f"the body is not a Stripe event: {exc}") from None
        # Verified: read the plain JSON rather than the SDK's object wrapper.
        event = json.loads(payload)
        return _to_billing_event(event)


@contextmanager
def _refusals_as_rejected() -> Iterator[None]:
    # 400/404 (bad parameters, unknown customer, a reused idempotency key) will fail the same way
    # on retry; connection errors, 429 and 5xx propagate and stop the push until the next run.
    try:
        yield
    except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
        raise UsageRejected(f"Stripe refused it ({exc.http_status}): {exc.user_message or exc}") from exc


def _to_billing_event(event: Any) -> BillingEvent:
    if not isinstance(event, dict):
        raise InvalidWebhook("the body is not a Stripe event")
    obj = (event.get("data") or {}).get("object") or {}
    customer = obj.get("customer")
    if isinstance(customer, dict):  # an expanded customer object
        customer = customer.get("id")
    if obj.get("object") == "customer":
        customer = obj.get("id")
    data = {k: obj[k] for k in INVOICE_FIELDS if k in obj} if obj.get("object") == "invoice" else {}
    if not event.get("id") or not event.get("type"):
        raise InvalidWebhook("the body is not a Stripe event: no id or type")
    return BillingEvent(
        id=str(event["id"]),
        type=str(event["type"]),
        created=int(event.get("created") or 0),
        customer_id=customer if isinstance(customer, str) else None,
        object_id=obj.get("id"),
        data=data,
    )
