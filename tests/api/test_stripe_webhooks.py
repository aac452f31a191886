"""POST /v1/webhooks/stripe over a live server: bodies signed locally with Stripe's scheme and
verified by the real SDK (`stripe.Webhook.construct_event`); replays recorded once."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select, update

from infra.db import session_scope
from infra.models import Org, StripeEvent
from tests.support.ledger import org_of
from tests.support.stripe_standin import event_body, shared_standin, sign, stripe_configured


@pytest.fixture()
def stripe_on(platform) -> Iterator[None]:
    with stripe_configured(shared_standin().base_url):
        yield


@pytest.fixture()
def customer(api_key) -> tuple[str, str]:
    """(org id, Stripe customer id) for a fresh org already linked to a customer."""
    org_id, customer_id = org_of(api_key), f"cus_{secrets.token_hex(7)}"
    with session_scope() as session:
        session.execute(update(Org).where(Org.id == org_id).values(stripe_customer_id=customer_id))
    return org_id, customer_id


def _post(server, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return server.api.post("/webhooks/stripe", content=body, headers=headers)


def _invoice(customer_id: str, status: str = "paid") -> dict[str, object]:
    return {
        "id": f"in_{secrets.token_hex(8)}",
        "object": "invoice",
        "customer": customer_id,
        "status": status,
        "amount_due": 1234,
        "amount_paid": 1234 if status == "paid" else 0,
        "currency": "usd",
        "attempt_count": 1,
        "lines": {"data": []},
    }


def _events(event_id: str) -> list[StripeEvent]:
    with session_scope() as session:
        return list(session.scalars(select(StripeEvent).where(StripeEvent.id == event_id)))


def _preview(server, api_key: str) -> dict[str, object]:
    return server.api.get("/usage/invoice_preview", headers={"Authorization": f"Bearer {api_key}"}).json()


def test_a_signed_invoice_paid_is_recorded_once(server, stripe_on, customer, api_key) -> None:
    org_id, customer_id = customer
    invoice = _invoice(customer_id)
    body = event_body("invoice.paid", invoice)
    r = _post(server, body, sign(body))
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["received"] is True and ack["type"] == "invoice.paid" and ack["duplicate"] is False
    (row,) = _events(ack["id"])
    assert (row.org_id, row.stripe_customer_id, row.object_id) == (org_id, customer_id, invoice["id"])
    assert row.data["amount_paid"] == 1234 and row.data["status"] == "paid"
    assert _preview(server, api_key)["payment_status"] == "paid"

    again = _post(server, body, sign(body))  # Stripe redelivers: same event id, a new signature
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(_events(ack["id"])) == 1


def test_bad_signatures_are_400_and_store_nothing(server, stripe_on, customer) -> None:
    _, customer_id = customer
    event_id = f"evt_{secrets.token_hex(12)}"
    body = event_body("invoice.paid", _invoice(customer_id), event_id=event_id)
    tampered = body.replace(b"1234", b"1")
    cases = {
        "wrong secret": (body, sign(body, secret="whsec_not_the_one")),
        "tampered body": (tampered, sign(body)),
        "too old (replayed capture)": (body, sign(body, timestamp=int(time.time()) - 600)),
        "missing header": (body, None),
        "garbage header": (body, "nonsense"),
    }
    for name, (payload, signature) in cases.items():
        r = _post(server, payload, signature)
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["code"] == "invalid_signature", name
    assert _events(event_id) == []
    ok = _post(server, body, sign(body))  # the same body, signed right, goes through
    assert ok.status_code == 200 and ok.json()["id"] == event_id


def test_payment_status_follows_the_newest_event(server, stripe_on, customer, api_key) -> None:
    _, customer_id = customer
    t = int(time.time())
    failed = event_body("invoice.payment_failed", _invoice(customer_id, "open"), created=t - 10)
    assert _post(server, failed, sign(failed)).status_code == 200
    assert _preview(server, api_key)["payment_status"] == "payment_failed"
    stale_paid = event_body("invoice.paid", _invoice(customer_id), created=t - 100)  # delivered late
    assert _post(server, stale_paid, sign(stale_paid)).status_code == 200
    assert _preview(server, api_key)["payment_status"] == "payment_failed"
    paid = event_body("invoice.paid", _invoice(customer_id), created=t)
    assert _post(server, paid, sign(paid)).status_code == 200
    preview = _preview(server, api_key)
    assert preview["payment_status"] == "paid" and preview["stripe_customer_id"] == customer_id


def test_other_event_types_are_recorded_without_effect(server, stripe_on, customer, api_key) -> None:
    _, customer_id = customer
    body = event_body("customer.updated", {"id": customer_id, "object": "customer", "name": "x"})
    r = _post(server, body, sign(body))
    assert r.status_code == 200 and r.json()["duplicate"] is False
    (row,) = _events(r.json()["id"])
    assert row.type == "customer.updated" and row.stripe_customer_id == customer_id and row.data == {}
    assert _preview(server, api_key)["payment_status"] is None


def test_webhooks_are_refused_when_stripe_is_off(server, platform) -> None:
    body = event_body("invoice.paid", {"id": "in_1", "object": "invoice"})
    r = _post(server, body, sign(body))
    assert r.status_code == 503 and r.json()["error"]["code"] == "billing_not_configured"
