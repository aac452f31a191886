"""The billing-provider seam: the three things edgetune asks of a provider, and the choice of one
from settings. Service code (services/billing.py) only talks to this protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class InvalidWebhook(Exception):
    """A webhook whose signature, timestamp or body does not verify."""


class UsageRejected(Exception):
    """The provider refused one usage push for good (bad customer, too old): retrying that row
    now will not help, but other rows can still go. Any other exception means "stop for now"."""


@dataclass(frozen=True)
class UsagePush:
    """One ledger row as the provider bills it: an integer number of micro-USD (1e-6 USD)."""

    ledger_id: int
    customer_id: str
    value: int
    timestamp: int


@dataclass(frozen=True)
class BillingEvent:
    """A verified provider event, reduced to what edgetune records and acts on."""

    id: str
    type: str
    created: int
    customer_id: str | None = None
    object_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class BillingProvider(Protocol):
    name: str

    def ensure_customer(self, *, org_id: str, org_name: str) -> str:
        """Create (idempotently, per org) the provider's customer for an org; returns its id."""
        ...

    def push_usage(self, push: UsagePush) -> None:
        """Report one ledger row; pushing the same row again must never bill it twice."""
        ...

    def parse_webhook(self, payload: bytes, signature: str | None) -> BillingEvent:
        """Verify a webhook on its raw body; raises InvalidWebhook."""
        ...
