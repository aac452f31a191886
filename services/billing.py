"""Billing: pushing the usage ledger to the billing provider, and its webhooks. The REST webhook
route, the periodic Celery task and `edgetune billing push` all call these functions.

Values go to the provider as integer micro-USD (1e-6 USD): meter values are integers, and a
ledger row is often a fraction of a cent (a few CPU seconds), which cents would round to zero.
On Stripe the meter's price is then 0.0001 cents per unit (`unit_amount_decimal="0.0001"`).
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from infra.billing import (
    BillingEvent,
    BillingProvider,
    InvalidWebhook,
    UsagePush,
    UsageRejected,
    get_billing_provider,
)
from infra.db import dialect_insert
from infra.models import Org, StripeEvent, UsageRecord, now
from infra.settings import get_settings
from services.errors import InvalidRequest, ServiceUnavailable
from services.schemas.billing import BillingPushPublic, WebhookAckPublic

log = logging.getLogger(__name__)


def micro_usd(amount_usd: float) -> int:
    return int(round(amount_usd * 1_000_000))


def ensure_customer(*, session: Session, provider: BillingProvider, org: Org) -> bool:
    """Link the org to a provider customer on first use; returns whether one was created."""
    if org.stripe_customer_id:
        return False
    # The provider call is idempotent per org, so a pusher racing this one gets the same id.
    org.stripe_customer_id = provider.ensure_customer(org_id=org.id, org_name=org.name)
    session.flush()
    return True


def _pending(session: Session, after_id: int, limit: int) -> list[UsageRecord]:
    # SKIP LOCKED: two pushers (beat firing twice, a CLI run) take disjoint rows on PostgreSQL.
    stmt = (
        select(UsageRecord)
        .where(UsageRecord.pushed_at.is_(None), UsageRecord.id > after_id)
        .order_by(UsageRecord.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(stmt))


def _push_row(
    session: Session, provider: BillingProvider, row: UsageRecord, report: BillingPushPublic
) -> None:
    value = micro_usd(row.amount_usd)
    if value > 0:
        org = session.get(Org, row.org_id)
        assert org is not None  # the FK cascades deletes
        report.customers_created += ensure_customer(session=session, provider=provider, org=org)
        assert org.stripe_customer_id is not None
        provider.push_usage(UsagePush(row.id, org.stripe_customer_id, value, row.created_at))
        report.pushed += 1
    else:
        report.zero_value += 1
    row.pushed_at = now()


def _push_batch(
    session: Session, provider: BillingProvider, report: BillingPushPublic, after_id: int, limit: int
) -> int | None:
    """Push one batch in one transaction; returns the id to continue after, None when done."""
    rows = _pending(session, after_id, limit)
    try:
        for row in rows:
            try:
                _push_row(session, provider, row, report)
            except UsageRejected as exc:  # this row only: it stays pending, the others go on
                log.warning("billing provider refused ledger row %s: %s", row.id, exc)
                report.rejected += 1
                report.error = f"row {row.id}: {exc}"[:500]
    finally:
        # Rows pushed before an error are kept; a row pushed but not committed (a crash here) is
        # pushed again with the same idempotency key and identifier, which Stripe de-duplicates.
        session.commit()
    return rows[-1].id if len(rows) == limit else None


def push_pending(*, session: Session, provider: BillingProvider | None = None) -> BillingPushPublic:
    """Send every ledger row not yet pushed; safe to run concurrently and to retry."""
    provider = provider or get_billing_provider()
    report = BillingPushPublic(provider=provider.name if provider else None)
    if provider is None:
        return report
    batch, after = get_settings().billing_push_batch, 0
    try:
        while (next_after := _push_batch(session, provider, report, after, batch)) is not None:
            after = next_after
    except Exception as exc:  # the provider is unreachable: stop here, the next run goes on
        log.warning("billing push stopped: %s", exc)
        report.error = f"{type(exc).__name__}: {exc}"[:500]
    report.pending = session.scalar(select(func.count()).where(UsageRecord.pushed_at.is_(None))) or 0
    return report


def _record_event(session: Session, event: BillingEvent) -> bool:
    """Store a processed event; False when its id was already stored (a redelivery)."""
    org_id = None
    if event.customer_id:
        org_id = session.scalar(select(Org.id).where(Org.stripe_customer_id == event.customer_id))
    stmt = dialect_insert(session, StripeEvent).values(
        id=event.id,
        type=event.type,
        org_id=org_id,
        stripe_customer_id=event.customer_id,
        object_id=event.object_id,
        data=event.data,
        stripe_created=event.created,
        received_at=now(),
    )
    inserted = session.scalar(stmt.on_conflict_do_nothing(index_elements=["id"]).returning(StripeEvent.id))
    return inserted is not None


def handle_stripe_webhook(*, session: Session, payload: bytes, signature: str | None) -> WebhookAckPublic:
    """Verify a Stripe delivery on its raw body and record it once. invoice.paid and
    invoice.payment_failed set the org's payment status (shown in the invoice preview); other
    types are recorded as received."""
    provider = get_billing_provider()
    if provider is None or provider.name != "stripe":
        raise ServiceUnavailable("Stripe billing is not configured", code="billing_not_configured")
    try:
        event = provider.parse_webhook(payload, signature)
    except InvalidWebhook as exc:
        raise InvalidRequest(str(exc), param="Stripe-Signature", code="invalid_signature") from None
    created = _record_event(session, event)
    session.commit()
    if created and event.type == "invoice.payment_failed":
        log.warning("Stripe invoice %s payment failed (customer %s)", event.object_id, event.customer_id)
    return WebhookAckPublic(id=event.id, type=event.type, duplicate=not created)
