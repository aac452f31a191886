from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

GroupBy = Literal["job", "day"]


# Shared properties of a ledger aggregate: one (stage, unit, unit price) within a bucket or period
class UsageLineBase(BaseModel):
    stage: str
    unit: str = Field(description="What was measured, e.g. cpu_second, h100-80gb_second, teacher_1k_tokens.")
    quantity: float
    unit_price_usd: float
    amount_usd: float


# Properties to return via API: usage within one bucket
class UsageResultPublic(UsageLineBase):
    object: Literal["usage.result"] = "usage.result"
    records: int = Field(description="Ledger rows summed into this result.")


class UsageBucketPublic(BaseModel):
    object: Literal["bucket"] = "bucket"
    # A day bucket spans its UTC day; a job bucket spans the job's first to last ledger row.
    start_time: int
    end_time: int
    job_id: str | None = None
    day: str | None = Field(default=None, description="The UTC date (YYYY-MM-DD) of a day bucket.")
    amount_usd: float
    results: list[UsageResultPublic]


class UsagePublic(BaseModel):
    object: Literal["usage"] = "usage"
    group_by: GroupBy
    start_time: int
    end_time: int
    data: list[UsageBucketPublic]
    total_usd: float


class InvoiceLinePublic(UsageLineBase):
    object: Literal["invoice.line_item"] = "invoice.line_item"
    description: str


class InvoicePreviewPublic(BaseModel):
    object: Literal["invoice_preview"] = "invoice_preview"
    organization_id: str
    currency: Literal["usd"] = "usd"
    period_start: int
    period_end: int
    lines: list[InvoiceLinePublic]
    total_usd: float
    stripe_customer_id: str | None = None
    payment_status: Literal["paid", "payment_failed"] | None = Field(
        default=None, description="From the newest invoice.paid / invoice.payment_failed webhook received."
    )
