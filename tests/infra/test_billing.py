"""The usage ledger's idempotency and its push to Stripe, through the real `stripe` SDK against the
local stand-in (tests/support/stripe_standin.py), on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from infra.billing import get_billing_provider
from infra.db import get_sessionmaker, session_scope
from infra.models import Job, UsageRecord
from services.billing import push_pending
from services.jobs import record_usage
from tests.conftest import free_port
from tests.support.ledger import add_row, customer_of, new_job, org_of, rows_of
from tests.support.stripe_standin import StripeStandin, shared_standin, stripe_configured


@pytest.fixture()
def stripe_standin(platform) -> Iterator[StripeStandin]:
    standin = shared_standin()
    with stripe_configured(standin.base_url):
        yield standin


@pytest.fixture()
def org_id(api_key) -> str:
    return org_of(api_key)


def _record(job_id: str, stage: str, quantity: float, unit: str = "cpu_second", price: float = 0.01) -> int:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return record_usage(session, job, stage=stage, unit=unit, quantity=quantity, unit_price=price).id


def _total(job_id: str) -> float:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.total_cost_usd


def _push() -> None:
    with session_scope() as session:
        push_pending(session=session)


# --- the ledger --------------------------------------------------------------------------------


def test_a_retried_stage_is_billed_once(org_id) -> None:
    job = new_job(org_id)
    first = _record(job, "train", 10.0)
    again = _record(job, "train", 12.5)  # the same stage finishing again on a retried attempt
    other = _record(job, "evaluate", 3.0)
    rows = rows_of(org_id)
    assert again == first and other != first
    assert [(r.stage, r.quantity, r.idempotency_key) for r in rows] == [
        ("train", 10.0, f"{job}:train:cpu_second"),
        ("evaluate", 3.0, f"{job}:evaluate:cpu_second"),
    ]
    assert _total(job) == pytest.approx(0.13)  # 10 s + 3 s at $0.01; the retry added nothing


def test_concurrent_writers_of_one_stage_leave_one_row_and_one_charge(org_id) -> None:
    """Two workers finish the same stage at once: the second waits on the first's uncommitted row
    (PostgreSQL's unique index), then finds it and neither adds a row nor charges the job."""
    job = new_job(org_id)
    first = get_sessionmaker()()
    job_a = first.get(Job, job)
    assert job_a is not None
    row_a = record_usage(first, job_a, stage="train", unit="cpu_second", quantity=10.0, unit_price=0.01)
    result: dict[str, object] = {}

    def second_worker() -> None:
        with session_scope() as session:
            job_b = session.get(Job, job)
            assert job_b is not None
            row = record_usage(
                session, job_b, stage="train", unit="cpu_second", quantity=99.0, unit_price=0.01
            )
            result["id"], result["total"] = row.id, job_b.total_cost_usd

    thread = threading.Thread(target=second_worker)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive(), "the second writer must wait for the first one's transaction"
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert result["id"] == row_a.id
    assert result["total"] == pytest.approx(0.0)  # the loser's job total was not increased
    assert [r.quantity for r in rows_of(org_id)] == [10.0]
    assert _total(job) == pytest.approx(0.1)


def test_the_cap_still_cuts_the_last_row(org_id) -> None:
    job = new_job(org_id, budget_usd=0.25)
    _record(job, "prepare", 20.0)  # $0.20
    cut = _record(job, "train", 30.0)  # $0.30 asked, $0.05 left under the cap
    rows = {r.id: r for r in rows_of(org_id)}
    assert rows[cut].amount_usd == pytest.approx(0.05)
    assert rows[cut].quantity == pytest.approx(5.0)
    assert _total(job) == pytest.approx(0.25)


# --- pushing to Stripe -------------------------------------------------------------------------


def test_billing_is_off_without_a_key(platform, org_id) -> None:
    add_row(org_id, None, stage="train", unit="cpu_second", quantity=1, price=0.01)
    assert get_billing_provider() is None
    with session_scope() as session:
        report = push_pending(session=session)
    assert report.provider is None and report.pushed == 0
    assert all(r.pushed_at is None for r in rows_of(org_id))


def test_push_sends_each_row_once_as_a_meter_event(stripe_standin, org_id) -> None:
    job = new_job(org_id)
    a = add_row(org_id, job, stage="train", unit="cpu_second", quantity=120, price=0.0001)
    b = add_row(org_id, job, stage="synthesize", unit="teacher_1k_tokens", quantity=2.5, price=0.002)
    zero = add_row(org_id, job, stage="export", unit="cpu_second", quantity=0, price=0.0001)
    _push()
    customer = customer_of(org_id)
    assert customer is not None and customer in stripe_standin.state.customers
    assert stripe_standin.state.customers[customer]["metadata"] == {"edgetune_org_id": org_id}
    events = stripe_standin.state.events_for(customer)
    assert [(e["identifier"], e["payload"]["value"], e["event_name"]) for e in events] == [
        (f"usage_record_{a}", "12000", "edgetune_usage_microusd"),  # $0.012 in micro-USD
        (f"usage_record_{b}", "5000", "edgetune_usage_microusd"),
    ]
    keys = [r["key"] for r in stripe_standin.state.requests]
    assert f"edgetune-customer-{org_id}" in keys
    assert {f"edgetune-usage-{a}", f"edgetune-usage-{b}"} <= set(keys)
    assert f"edgetune-usage-{zero}" not in keys  # nothing to bill: marked pushed, not sent
    assert all(r.pushed_at is not None for r in rows_of(org_id))

    add_row(org_id, job, stage="evaluate", unit="cpu_second", quantity=10, price=0.0001)
    _push()  # only the new row goes; the customer is reused
    assert len(stripe_standin.state.events_for(customer)) == 3
    mine = [c for c in stripe_standin.state.customers.values() if c["metadata"]["edgetune_org_id"] == org_id]
    assert len(mine) == 1


def test_a_lost_response_and_a_lost_commit_never_bill_twice(stripe_standin, org_id) -> None:
    job = new_job(org_id)
    row = add_row(org_id, job, stage="train", unit="cpu_second", quantity=50, price=0.0001)
    stripe_standin.state.drop_responses = 1  # Stripe stored the event; its answer never arrived
    _push()
    customer = customer_of(org_id)
    assert customer is not None
    sent = [r for r in stripe_standin.state.requests if r["key"] == f"edgetune-usage-{row}"]
    assert len(sent) == 2 and sent[1].get("replayed")  # the SDK's retry was replayed
    assert len(stripe_standin.state.events_for(customer)) == 1

    # The pusher died after Stripe answered but before its commit: the row is pending again.
    with session_scope() as session:
        session.execute(update(UsageRecord).where(UsageRecord.id == row).values(pushed_at=None))
    _push()
    sent = [r for r in stripe_standin.state.requests if r["key"] == f"edgetune-usage-{row}"]
    assert len(sent) == 3 and sent[2].get("replayed")
    assert len(stripe_standin.state.events_for(customer)) == 1
    assert rows_of(org_id)[0].pushed_at is not None


def test_a_changed_row_is_refused_by_its_idempotency_key(stripe_standin, org_id) -> None:
    row = add_row(org_id, None, stage="train", unit="cpu_second", quantity=50, price=0.0001)
    _push()
    with session_scope() as session:  # a ledger row must never change; if one did ...
        session.execute(
            update(UsageRecord).where(UsageRecord.id == row).values(amount_usd=1.0, pushed_at=None)
        )
    with session_scope() as session:
        report = push_pending(session=session)
    assert report.rejected >= 1 and report.error and f"row {row}" in report.error
    assert "idempotent" in report.error
    customer = customer_of(org_id)
    assert customer is not None
    assert [e["payload"]["value"] for e in stripe_standin.state.events_for(customer)] == ["5000"]
    assert rows_of(org_id)[0].pushed_at is None  # left pending, and reported

    # Put the row right again: its push is then a replay of the first, still one event.
    with session_scope() as session:
        session.execute(update(UsageRecord).where(UsageRecord.id == row).values(amount_usd=0.005))
    _push()
    assert rows_of(org_id)[0].pushed_at is not None
    assert len(stripe_standin.state.events_for(customer)) == 1


def test_an_unreachable_provider_leaves_rows_pending(platform, org_id) -> None:
    standin = shared_standin()
    add_row(org_id, None, stage="train", unit="cpu_second", quantity=50, price=0.0001)
    with stripe_configured(f"http://127.0.0.1:{free_port()}"):  # nothing listens there
        with session_scope() as session:
            report = push_pending(session=session)
    assert report.error and "APIConnectionError" in report.error and report.pending >= 1
    assert rows_of(org_id)[0].pushed_at is None
    with stripe_configured(standin.base_url):
        _push()
    customer = customer_of(org_id)
    assert customer is not None and len(standin.state.events_for(customer)) == 1


def test_cli_and_celery_task_push_through_the_same_service(stripe_standin, org_id) -> None:
    from cli.main import main
    from worker.billing_tasks import billing_push
    from worker.celery_app import celery_app

    first = add_row(org_id, None, stage="train", unit="cpu_second", quantity=10, price=0.0001)
    out = CliRunner().invoke(main, ["billing", "push"])
    assert out.exit_code == 0, out.output
    assert '"provider": "stripe"' in out.output
    second = add_row(org_id, None, stage="evaluate", unit="cpu_second", quantity=20, price=0.0001)
    report = billing_push.apply().get()
    assert report["provider"] == "stripe"
    customer = customer_of(org_id)
    assert customer is not None
    assert [e["identifier"] for e in stripe_standin.state.events_for(customer)] == [
        f"usage_record_{first}",
        f"usage_record_{second}",
    ]
    schedule = celery_app.conf.beat_schedule["billing-push"]
    assert schedule["task"] == billing_push.name == "edgetune.billing_push"
    assert schedule["task"] in celery_app.tasks


def test_a_push_goes_through_every_batch(stripe_standin, org_id, monkeypatch) -> None:
    from infra.settings import get_settings

    monkeypatch.setenv("EDGETUNE_BILLING_PUSH_BATCH", "2")
    get_settings.cache_clear()
    ids = [add_row(org_id, None, stage=f"s{i}", unit="cpu_second", quantity=1, price=0.001) for i in range(5)]
    with session_scope() as session:
        report = push_pending(session=session)
    assert report.pushed >= 5
    with session_scope() as session:
        pushed = session.scalars(
            select(UsageRecord.id).where(UsageRecord.org_id == org_id, UsageRecord.pushed_at.is_not(None))
        ).all()
    assert sorted(pushed) == ids
    customer = customer_of(org_id)
    assert customer is not None
    assert [e["identifier"] for e in stripe_standin.state.events_for(customer)] == [
        f"usage_record_{i}" for i in ids
    ]
