"""The billing provider the operator configured (infra/settings.py), if any."""

from __future__ import annotations

from infra.billing.provider import BillingProvider
from infra.billing.stripe_provider import StripeBillingProvider
from infra.settings import Settings, get_settings


def get_billing_provider(settings: Settings | None = None) -> BillingProvider | None:
    """The configured provider, or None: billing is off unless a Stripe API key is set."""
    s = settings or get_settings()
    if not s.stripe_api_key:
        return None
    return StripeBillingProvider(
        api_key=s.stripe_api_key,
        api_base=s.stripe_api_base,
        webhook_secret=s.stripe_webhook_secret,
        meter_event_name=s.stripe_meter_event_name,
    )
