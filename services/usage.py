"""Reading the usage ledger: usage by job or by UTC day, and the invoice preview for the current
calendar month. The ledger (usage_records) is the source of truth for every figure here."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import BigInteger, func, literal_column, select
from sqlalchemy.orm import Session

from infra.models import Org, StripeEvent, UsageRecord, now
from services.errors import InvalidRequest
from services.schemas.usage import (
    GroupBy,
    InvoiceLinePublic,
    InvoicePreviewPublic,
    UsageBucketPublic,
    UsagePublic,
    UsageResultPublic,
)

DAY = 86400
PAYMENT_EVENTS = {"invoice.paid": "paid", "invoice.payment_failed": "payment_failed"}


def period_bounds(at: int) -> tuple[int, int]:
    """The calendar month (UTC) holding `at`: [first day 00:00, first day of next month 00:00)."""
    t = dt.datetime.fromtimestamp(at, dt.UTC)
    start = dt.datetime(t.year, t.month, 1, tzinfo=dt.UTC)
    end = dt.datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=dt.UTC)
    return int(start.timestamp()), int(end.timestamp())


def _aggregate(session: Session, org: Org, start: int, end: int, key: Any | None) -> list[Any]:
    """Ledger rows of [start, end) summed per (key, stage, unit, unit price); rows by label."""
    r = UsageRecord
    cols = (r.stage, r.unit, r.unit_price_usd)
    keys = () if key is None else (key,)
    stmt = (
        select(
            *(k.label("bucket") for k in keys),
            *cols,
            func.sum(r.quantity).label("quantity"),
            func.sum(r.amount_usd).label("amount"),
            func.count().label("records"),
            func.min(r.created_at).label("first"),
            func.max(r.created_at).label("last"),
        )
        .where(r.org_id == org.id, r.created_at >= start, r.created_at < end)
        .group_by(*keys, *cols)
        .order_by(*keys, *cols)
    )
    return list(session.execute(stmt).all())


def _result(row: Any) -> UsageResultPublic:
    return UsageResultPublic(
        stage=row.stage,
        unit=row.unit,
        quantity=round(row.quantity, 6),
        unit_price_usd=row.unit_price_usd,
        amount_usd=round(row.amount, 6),
        records=row.records,
    )


def _bucket(group_by: GroupBy, key: Any, rows: list[Any]) -> UsageBucketPublic:
    results = [_result(row) for row in rows]
    amount = round(sum(row.amount for row in rows), 6)
    if group_by == "day":
        start = int(key) * DAY
        day = dt.datetime.fromtimestamp(start, dt.UTC).date().isoformat()
        return UsageBucketPublic(
            start_time=start, end_time=start + DAY, day=day, amount_usd=amount, results=results
        )
    first, last = min(row.first for row in rows), max(row.last for row in rows)
    return UsageBucketPublic(
        start_time=first, end_time=last + 1, job_id=key, amount_usd=amount, results=results
    )


def get_usage(
    *, session: Session, org: Org, group_by: GroupBy, start_time: int | None, end_time: int | None
) -> UsagePublic:
    """The org's ledger in [start_time, end_time), by job or by UTC day; defaults to this month."""
    period_start, _ = period_bounds(now())
    start = period_start if start_time is None else start_time
    end = now() + 1 if end_time is None else end_time
    if end <= start:
        raise InvalidRequest("end_time must be after start_time", param="end_time")
    # A literal divisor (not a bound parameter) keeps SELECT and GROUP BY the same expression.
    day = UsageRecord.created_at // literal_column(str(DAY), BigInteger)
    key = UsageRecord.job_id if group_by == "job" else day
    grouped: dict[Any, list[Any]] = defaultdict(list)
    for row in _aggregate(session, org, start, end, key):
        grouped[row.bucket].append(row)
    data = [_bucket(group_by, k, rows) for k, rows in grouped.items()]
    if group_by == "job":
        data.sort(key=lambda b: (b.start_time, b.job_id or ""))
    total = round(sum(b.amount_usd for b in data), 6)
    return UsagePublic(group_by=group_by, start_time=start, end_time=end, data=data, total_usd=total)


def payment_status(session: Session, org: Org) -> str | None:
    """What the newest invoice payment webhook said for this org (Stripe may deliver out of order)."""
    latest = session.scalar(
        select(StripeEvent.type)
        .where(StripeEvent.org_id == org.id, StripeEvent.type.in_(list(PAYMENT_EVENTS)))
        .order_by(StripeEvent.stripe_created.desc(), StripeEvent.received_at.desc())
        .limit(1)
    )
    return PAYMENT_EVENTS.get(latest) if latest else None


def invoice_preview(*, session: Session, org: Org, at: int | None = None) -> InvoicePreviewPublic:
    """The current calendar month's (UTC) charges so far: one line per stage, unit and price."""
    start, end = period_bounds(now() if at is None else at)
    lines = [
        InvoiceLinePublic(
            description=f"{row.stage} · {row.unit}",
            stage=row.stage,
            unit=row.unit,
            quantity=round(row.quantity, 6),
            unit_price_usd=row.unit_price_usd,
            amount_usd=round(row.amount, 6),
        )
        for row in _aggregate(session, org, start, end, None)
    ]
    return InvoicePreviewPublic(
        organization_id=org.id,
        period_start=start,
        period_end=end,
        lines=lines,
        total_usd=round(sum(line.amount_usd for line in lines), 6),
        stripe_customer_id=org.stripe_customer_id,
        payment_status=payment_status(session, org),  # type: ignore[arg-type]
    )
