"""GET /v1/usage (by job, by UTC day) and GET /v1/usage/invoice_preview over a live server,
from ledger rows on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from infra.models import now
from services.usage import period_bounds
from tests.conftest import new_key
from tests.support.ledger import add_row, new_job, org_of

DAY = 86400


def _get(server, key: str, path: str, **params: object) -> httpx.Response:
    return server.api.get(path, params=params, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture()
def ledger(api_key):
    """Two jobs over two days, plus a row from before the window and another org's row."""
    org = org_of(api_key)
    start = (now() // DAY - 3) * DAY  # midnight UTC three days ago
    j1, j2 = new_job(org), new_job(org)
    add_row(org, j1, stage="train", unit="cpu_second", quantity=100, price=0.001, at=start + 10)
    add_row(org, j1, stage="synthesize", unit="teacher_1k_tokens", quantity=3, price=0.02, at=start + 20)
    add_row(org, j2, stage="train", unit="cpu_second", quantity=50, price=0.001, at=start + DAY + 5)
    add_row(org, j2, stage="evaluate", unit="cpu_second", quantity=10, price=0.001, at=start + DAY + 6)
    add_row(org, j1, stage="train", unit="cpu_second", quantity=999, price=0.001, at=start - 1)
    other = org_of(new_key())
    add_row(other, new_job(other), stage="train", unit="cpu_second", quantity=7, price=0.001, at=start + 30)
    return {"key": api_key, "start": start, "jobs": (j1, j2)}


def test_usage_by_job(server, ledger) -> None:
    j1, j2 = ledger["jobs"]
    start = ledger["start"]
    r = _get(server, ledger["key"], "/usage", group_by="job", start_time=start, end_time=start + 2 * DAY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "usage" and body["group_by"] == "job"
    assert [b["job_id"] for b in body["data"]] == [j1, j2]
    b1, b2 = body["data"]
    assert b1["amount_usd"] == pytest.approx(0.1 + 0.06)  # the row before start_time is left out
    assert [(x["stage"], x["unit"], x["quantity"], x["records"]) for x in b1["results"]] == [
        ("synthesize", "teacher_1k_tokens", 3, 1),
        ("train", "cpu_second", 100, 1),
    ]
    assert (b1["start_time"], b1["end_time"]) == (start + 10, start + 21)
    assert b2["amount_usd"] == pytest.approx(0.06)
    assert body["total_usd"] == pytest.approx(0.22)  # the other org's row is not counted


def test_usage_by_day(server, ledger) -> None:
    start = ledger["start"]
    r = _get(
        server, ledger["key"], "/usage", group_by="day", start_time=start - DAY, end_time=start + 2 * DAY
    )
    assert r.status_code == 200, r.text
    days = r.json()["data"]
    first_day = dt.datetime.fromtimestamp(start, dt.UTC).date()
    assert [d["day"] for d in days] == [
        (first_day - dt.timedelta(days=1)).isoformat(),
        first_day.isoformat(),
        (first_day + dt.timedelta(days=1)).isoformat(),
    ]
    assert [(d["start_time"], d["end_time"]) for d in days] == [
        (start - DAY, start),
        (start, start + DAY),
        (start + DAY, start + 2 * DAY),
    ]
    assert [d["amount_usd"] for d in days] == pytest.approx([0.999, 0.16, 0.06])
    assert days[2]["results"][0]["stage"] == "evaluate" and days[2]["results"][1]["quantity"] == 50
    assert r.json()["total_usd"] == pytest.approx(0.999 + 0.22)

    narrow = _get(
        server, ledger["key"], "/usage", group_by="day", start_time=start + DAY, end_time=start + DAY + 6
    )
    assert [(x["stage"], x["quantity"]) for x in narrow.json()["data"][0]["results"]] == [("train", 50)]


def test_usage_rejects_bad_parameters(server, ledger) -> None:
    r = _get(server, ledger["key"], "/usage", start_time=100, end_time=100)
    assert r.status_code == 400 and r.json()["error"]["param"] == "end_time"
    r = _get(server, ledger["key"], "/usage", group_by="week")
    assert r.status_code == 400 and r.json()["error"]["param"] == "group_by"
    r = _get(server, ledger["key"], "/usage", start_time=-5)
    assert r.status_code == 400 and r.json()["error"]["param"] == "start_time"
    assert server.api.get("/usage").status_code == 401
    assert server.api.get("/usage/invoice_preview").status_code == 401


def test_usage_defaults_to_the_current_month(server, api_key) -> None:
    org = org_of(api_key)
    period_start, _ = period_bounds(now())
    add_row(org, None, stage="train", unit="cpu_second", quantity=5, price=0.001)
    add_row(org, None, stage="train", unit="cpu_second", quantity=5, price=0.001, at=period_start - 1)
    body = _get(server, api_key, "/usage").json()
    assert body["group_by"] == "day" and body["start_time"] == period_start
    assert body["total_usd"] == pytest.approx(0.005)
    assert body["data"][0]["job_id"] is None


def test_invoice_preview_for_the_current_period(server, api_key) -> None:
    org = org_of(api_key)
    period_start, period_end = period_bounds(now())
    j1, j2 = new_job(org), new_job(org)
    add_row(org, j1, stage="train", unit="cpu_second", quantity=100, price=0.001)
    add_row(org, j2, stage="train", unit="cpu_second", quantity=40, price=0.001)
    add_row(org, j2, stage="train", unit="h100-80gb_second", quantity=10, price=0.002)
    add_row(org, j1, stage="synthesize", unit="teacher_1k_tokens", quantity=4, price=0.02)
    add_row(org, j1, stage="train", unit="cpu_second", quantity=500, price=0.001, at=period_start - 60)
    r = _get(server, api_key, "/usage/invoice_preview")
    assert r.status_code == 200, r.text
    inv = r.json()
    assert inv["object"] == "invoice_preview" and inv["organization_id"] == org and inv["currency"] == "usd"
    assert (inv["period_start"], inv["period_end"]) == (period_start, period_end)
    start = dt.datetime.fromtimestamp(period_start, dt.UTC)
    assert (start.day, start.hour, start.minute) == (1, 0, 0)
    lines = [
        (x["stage"], x["unit"], x["quantity"], x["unit_price_usd"], x["amount_usd"]) for x in inv["lines"]
    ]
    assert lines == [
        ("synthesize", "teacher_1k_tokens", 4, 0.02, pytest.approx(0.08)),
        ("train", "cpu_second", 140, 0.001, pytest.approx(0.14)),  # two jobs, one line
        ("train", "h100-80gb_second", 10, 0.002, pytest.approx(0.02)),
    ]
    assert inv["total_usd"] == pytest.approx(0.24)  # last month's row is not in this period
    assert inv["stripe_customer_id"] is None and inv["payment_status"] is None


def test_period_bounds_cover_december() -> None:
    at = int(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC).timestamp())
    start, end = period_bounds(at)
    assert start == int(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp())
    assert end == int(dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp())
