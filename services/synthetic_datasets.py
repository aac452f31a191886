"""Synthetic datasets: the one place their rules live. The REST routes, the Celery task
(worker/synth_tasks.py) and a fine-tune job's synthesize stage (worker/stages/) all call these,
so a dataset made through the API and one made inside a job come from the same code."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from domain.chat_rows import to_jsonl
from domain.job_config import TaskSpec
from domain.lists import TERMINAL
from infra import queue
from infra.models import File, Org, SyntheticDataset, now
from infra.outbound import GuardedTransport, OutboundRefused, check_url, current_policy
from infra.price_book import price_book
from infra.settings import get_settings
from services import files as file_service
from services import limits, spend_budgets
from services.errors import InvalidRequest, NotFound, PaymentRequired, ServiceUnavailable
from services.ledger import append_usage, usage_key
from services.pagination import page
from services.run_lifecycle import cancel_run
from services.schemas.jobs import JobError
from services.schemas.synthetic_datasets import (
    SyntheticDatasetCreate,
    SyntheticDatasetPublic,
    TeacherOptions,
    TeacherPublic,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from synth.generate import SynthResult
    from synth.teacher import TeacherClient, TeacherSettings


def to_public(ds: SyntheticDataset) -> SyntheticDatasetPublic:
    teacher = TeacherOptions.model_validate(ds.teacher)
    return SyntheticDatasetPublic(
        id=ds.id,
        task=TaskSpec.model_validate(ds.task),
        seed=ds.seed,
        created_at=ds.created_at,
        started_at=ds.started_at,
        finished_at=ds.finished_at,
        status=ds.status,  # type: ignore[arg-type]
        progress=ds.progress or {},
        report=ds.report,
        error=JobError.model_validate(ds.error) if ds.error else None,
        training_file=ds.training_file,
        validation_file=ds.validation_file,
        teacher=TeacherPublic.model_validate(teacher.model_dump(exclude={"api_key"})),
        total_cost_usd=round(ds.total_cost_usd, 6),
    )


def create_dataset(*, session: Session, org: Org, body: SyntheticDatasetCreate) -> SyntheticDataset:
    """Store a queued dataset. An org with a budget caps the run's teacher cost at what is left."""
    check_teacher_url(body.teacher.base_url)
    limits.check_active_jobs(session, org)
    teacher = body.teacher.model_copy()
    remaining = spend_budgets.remaining_usd(session, org)
    if remaining is not None:
        if remaining <= 0:
            raise PaymentRequired(
                f"the organization's budget is spent (${remaining:.4f} left)", code="org_budget_exceeded"
            )
        teacher.max_cost_usd = min(teacher.max_cost_usd or remaining, remaining)
    ds = SyntheticDataset(
        org_id=org.id,
        status="queued",
        task=body.task.model_dump(mode="json"),
        teacher=teacher.model_dump(mode="json"),
        seed=body.seed,
        progress={"phase": "queued", "kept": 0, "wanted": body.task.num_examples},
        cancel_requested=False,
        total_cost_usd=0.0,
        enqueued_at=now(),
    )
    session.add(ds)
    session.commit()
    return ds


def check_teacher_url(base_url: str | None) -> None:
    """The early, request-time half of the outbound rule (literal internal addresses, schemes);
    the guard that counts runs when the worker connects (open_teacher, infra/outbound.py)."""
    if not base_url:
        return
    try:
        check_url(base_url, current_policy(), "teacher.base_url")
    except OutboundRefused as exc:
        raise InvalidRequest(str(exc), param="teacher.base_url", code="teacher_url_not_allowed") from None


def enqueue(*, session: Session, dataset: SyntheticDataset) -> None:
    """Hand the run to the workers. With the broker down the stored row is deleted again (it has
    no idempotency key, so no retry could be answered with it) and the caller gets a 503: nothing
    is left behind. The broker's error names its address, so it is logged, never returned."""
    ds_id = dataset.id
    try:
        queue.send(queue.RUN_SYNTHETIC_DATASET, ds_id)
    except Exception as exc:
        log.warning("could not queue synthetic dataset %s: %r", ds_id, exc)
        session.rollback()
        session.execute(delete(SyntheticDataset).where(SyntheticDataset.id == ds_id))
        session.commit()
        raise ServiceUnavailable(
            "the job queue is unavailable, so the dataset was not created; retry the same request later",
            code="queue_unavailable",
            retry_after=get_settings().queue_retry_after_s,
        ) from None


def submit_dataset(*, session: Session, org: Org, body: SyntheticDatasetCreate) -> SyntheticDataset:
    dataset = create_dataset(session=session, org=org, body=body)
    enqueue(session=session, dataset=dataset)
    return dataset


def get_dataset(*, session: Session, org: Org, dataset_id: str) -> SyntheticDataset:
    ds = session.get(SyntheticDataset, dataset_id)
    if ds is None or ds.org_id != org.id:
        raise NotFound(
            f"No such synthetic dataset: {dataset_id!r}", param="dataset_id", code="dataset_not_found"
        )
    return ds


def list_datasets(
    *, session: Session, org: Org, after: str | None, limit: int
) -> tuple[list[SyntheticDataset], bool]:
    after_row = get_dataset(session=session, org=org, dataset_id=after) if after else None
    stmt = select(SyntheticDataset).where(SyntheticDataset.org_id == org.id)
    return page(session, stmt, (SyntheticDataset.created_at, SyntheticDataset.id), after_row, limit)


def cancel_dataset(*, session: Session, org: Org, dataset_id: str) -> SyntheticDataset:
    """Cancel at once; the worker sees the flag within a second, sends no further teacher
    requests (those in flight finish), stores no files and bills nothing."""
    ds = get_dataset(session=session, org=org, dataset_id=dataset_id)
    cancel_run(ds, what="dataset", param="dataset_id", code="dataset_not_cancellable")
    forget_teacher_key(ds)
    session.commit()
    return ds


def forget_teacher_key(ds: SyntheticDataset) -> None:
    """A customer's teacher key is kept only while a run may still need it."""
    if (ds.teacher or {}).get("api_key"):
        ds.teacher = {**ds.teacher, "api_key": None}


def fail_dataset(session: Session, ds: SyntheticDataset, code: str, message: str) -> None:
    if ds.status in TERMINAL:
        return  # cancelled meanwhile: the customer's cancel stands
    ds.status, ds.finished_at = "failed", now()
    ds.error = {"code": code, "message": message, "param": None}
    forget_teacher_key(ds)
    session.commit()


def teacher_settings(options: TeacherOptions, base_url: str, *, bundled: bool = False) -> TeacherSettings:
    """The client settings for a run: the request's options over EDGETUNE_TEACHER_*. The server's
    API key is sent only to the server's own teacher, never to a base_url the request chose."""
    from synth.llama_server import STRUCTURED_OUTPUT
    from synth.teacher import TeacherSettings

    s = get_settings()
    # A request's own teacher is asked in OpenAI's form unless the request says otherwise (it may
    # say only for its own teacher: TeacherOptions); the operator's, as the settings say.
    operators = STRUCTURED_OUTPUT if bundled else s.teacher_structured_output
    dialect = (options.structured_output or "json_schema") if options.base_url else operators
    return TeacherSettings(
        structured_output=dialect,
        base_url=base_url,
        model=options.model or s.teacher_model,
        api_key=options.api_key if options.base_url else s.teacher_api_key,
        max_concurrency=options.max_concurrency,
        max_total_tokens=options.max_total_tokens,
        max_cost_usd=options.max_cost_usd,
        usd_per_1k_tokens=price_book().teacher_1k_tokens,
    )


def _ignore(_: str) -> None:
    pass


@contextmanager
def open_teacher(options: TeacherOptions, notify: Callable[[str], None] = _ignore) -> Iterator[TeacherClient]:
    """A teacher client for one run. With no base URL in the request or the settings, the bundled
    SmolLM2-135M-Instruct is served by llama.cpp on 127.0.0.1 for the length of the block."""
    from synth.llama_server import bundled_teacher_gguf, serve_gguf
    from synth.teacher import TeacherClient

    base_url = options.base_url or get_settings().teacher_base_url
    server: AbstractContextManager[str] = nullcontext(base_url)
    if not base_url:
        notify("No teacher endpoint configured: serving the bundled SmolLM2-135M-Instruct with llama.cpp")
        server = serve_gguf(bundled_teacher_gguf())
    # Only a tenant-given address is guarded: the operator's teacher (settings, or the bundled
    # server on 127.0.0.1) is where the operator chose to send requests.
    transport = None
    if options.base_url:
        limits = httpx.Limits(max_connections=options.max_concurrency)
        transport = GuardedTransport(current_policy(), limits=limits)
    with (
        server as url,
        TeacherClient(teacher_settings(options, url, bundled=not base_url), transport=transport) as client,
    ):
        yield client


def store_rows(session: Session, org: Org, rows: list[dict[str, object]], filename: str) -> File:
    """Save synthesized rows as a fine-tune file of the org, validated by the same rule as uploads."""
    return file_service.create_file(
        session=session, org=org, filename=filename, purpose="fine-tune", data=to_jsonl(rows)
    )


def record_teacher_usage(
    session: Session, *, org_id: str, key: str, tokens: int, job_id: str | None = None
) -> float:
    """Append the teacher's tokens to the ledger once per key; returns the amount in USD."""
    price = price_book().teacher_1k_tokens
    row, _ = append_usage(
        session,
        org_id=org_id,
        job_id=job_id,
        stage="synthesize",
        unit="teacher_1k_tokens",
        quantity=tokens / 1000,
        unit_price=price,
        key=key,
    )
    return row.amount_usd


def finish_dataset(session: Session, ds: SyntheticDataset, result: SynthResult) -> None:
    """Store a finished run: both files, the report, the ledger row. A run cancelled meanwhile
    keeps its report (what it spent) and stores and bills nothing. One below the floor a job
    trains on (synth/floor.py) stores what it kept and bills the teacher (its work was done), then
    fails `insufficient_data` with the report, so the customer sees why."""
    session.refresh(ds)
    ds.report = result.report
    if ds.status != "running":
        session.commit()
        return
    org = session.get(Org, ds.org_id)
    assert org is not None
    if result.train_rows:
        ds.training_file = store_rows(session, org, result.train_rows, f"{ds.id}-train.jsonl").id
    if result.eval_rows:
        ds.validation_file = store_rows(session, org, result.eval_rows, f"{ds.id}-eval.jsonl").id
    key = usage_key(ds.id, "synthesize", "teacher_1k_tokens")
    ds.total_cost_usd = record_teacher_usage(
        session, org_id=ds.org_id, key=key, tokens=result.usage.total_tokens
    )
    ds.progress = {**(ds.progress or {}), "phase": "done", "kept": result.report["kept"]}
    forget_teacher_key(ds)
    session.commit()
    if result.report["short"]:
        message = f"the teacher's rows fell short: {'; '.join(result.report['short'])} ({_summary(result)})"
        fail_dataset(session, ds, "insufficient_data", message)
        return
    # Conditional, so a cancel that landed while the files were written still wins.
    session.execute(
        update(SyntheticDataset)
        .where(SyntheticDataset.id == ds.id, SyntheticDataset.status == "running")
        .values(status="succeeded", finished_at=now())
    )
    session.commit()


def _summary(result: SynthResult) -> str:
    r = result.report
    dropped, stopped = r["dropped_by_reason"], r["stopped"]
    return (
        f"{r['kept']} of {r['asked']} asked kept, {r['generated']} generated, dropped {dropped}, "
        f"{len(r['rounds'])} rounds, stopped: {stopped}"
    )
