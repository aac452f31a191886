"""Billing providers: where the usage ledger is sent to be invoiced. The ledger in the database
is the source of truth; a provider only receives it (Stripe today, behind `BillingProvider`)."""

from infra.billing.configured import get_billing_provider
from infra.billing.provider import (
    BillingEvent,
    BillingProvider,
    InvalidWebhook,
    UsagePush,
    UsageRejected,
)

__all__ = [
    "BillingEvent",
    "BillingProvider",
    "InvalidWebhook",
    "UsagePush",
    "UsageRejected",
    "get_billing_provider",
]
