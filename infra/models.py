"""The data model (SQLAlchemy 2). Alembic migrations in `migrations/` must match it exactly
(tests/infra/test_migrations.py compares them on PostgreSQL).

Times are unix seconds, as in OpenAI's API. Public ids carry OpenAI-style prefixes.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Org(Base):
    __tablename__ = "orgs"
    __table_args__ = (UniqueConstraint("stripe_customer_id", name="uq_orgs_stripe_customer_id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("org"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: no limit
    # Set by the billing provider on the first usage push (Stripe: customers.create).
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApiKey(Base):
    """An org's API key (services/api_keys.py). Refused from `revoked_at` on (a rotation's grace
    period sets it in the future) and from `expires_at` on; rotation makes a new row."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(
        String(64), unique=True
    )  # sha256 hex; the key itself is never stored
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to tell keys apart
    name: Mapped[str] = mapped_column(String(128), default="default", server_default="default")
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None: never
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # to the minute
    rotated_from: Mapped[str | None] = mapped_column(String(40), nullable=True)  # the key it replaced


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("file"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    row_count: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class FileTokenCount(Base):
    """A stored file's token counts as one base tokenizes it for one method at one max length: the
    plan's costly part, computed once per key (files never change) by services/token_counts.py."""

    __tablename__ = "file_token_counts"
    __table_args__ = (
        UniqueConstraint("file_id", "model", "method", "max_length", name="uq_file_token_counts_key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(256))
    method: Mapped[str] = mapped_column(String(16))
    max_length: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)  # sequences counted (a DPO pair gives two)
    tokens: Mapped[int] = mapped_column(BigInteger)
    longest: Mapped[int] = mapped_column(Integer)
    truncated_rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("org_id", "idempotency_key", name="uq_jobs_org_idempotency_key"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ftjob"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # domain.job_config.JobConfig, as JSON
    model: Mapped[str] = mapped_column(String(256))
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    hyperparameters: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # resolved values
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # When its last queue message was sent; a job still queued long after is requeued (worker/lifecycle.py)
    enqueued_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the pool it was routed to (infra/queue.py queue_for); None: settings.queue
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    stages_done: Mapped[list[Any]] = mapped_column(JSON, default=list)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # stage outputs, for resume
    result_files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    total_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    quote_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # the plan's quote at create
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_seq", "job_id", "seq"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, default=lambda: new_id("ftevent"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step_number", name="uq_checkpoints_job_step"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ftckpt"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("art"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    quantization: Mapped[str | None] = mapped_column(String(32), nullable=True)
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(1024))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    # "published" (its job passed the gate) or "rejected": a gate-failed job's files, kept so the
    # customer can inspect them; no alias may point at their version.
    status: Mapped[str] = mapped_column(String(16), default="published", server_default="published")


class UsageRecord(Base):
    """Append-only ledger of measured usage; a job's cost is the sum of its rows."""

    __tablename__ = "usage_records"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_usage_records_idempotency_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    unit: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[float] = mapped_column(Float)
    unit_price_usd: Mapped[float] = mapped_column(Float)
    amount_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    # One row per (job, stage, unit): a retried stage finds its row and is not billed twice.
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # When the row was sent to the billing provider; NULL rows are what the pusher sends next.
    pushed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class StripeEvent(Base):
    """A processed Stripe webhook event: its id makes a redelivered event a no-op."""

    __tablename__ = "stripe_events"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe's evt_...
    type: Mapped[str] = mapped_column(String(128))
    org_id: Mapped[str | None] = mapped_column(ForeignKey("orgs.id", ondelete="SET NULL"), index=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    object_id: Mapped[str | None] = mapped_column(String(255), nullable=True)  # e.g. the invoice id
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the fields edgetune acts on
    stripe_created: Mapped[int] = mapped_column(BigInteger)  # when Stripe created the event
    received_at: Mapped[int] = mapped_column(BigInteger, default=now)


class SyntheticDataset(Base):
    """A synthesis run (POST /v1/synthetic_datasets): a task spec in, a training and an eval file out."""

    __tablename__ = "synthetic_datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("synth"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)  # queued, running, succeeded, ...
    task: Mapped[dict[str, Any]] = mapped_column(JSON)  # domain.job_config.TaskSpec, as JSON
    teacher: Mapped[dict[str, Any]] = mapped_column(JSON)  # the request's teacher options
    seed: Mapped[int] = mapped_column(Integer)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # phase, kept, wanted
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    training_file: Mapped[str | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"))
    validation_file: Mapped[str | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    total_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # As for jobs: a running dataset whose worker stopped heart-beating is re-run or failed.
    heartbeat_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    enqueued_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # as Job.enqueued_at


class RegisteredModel(Base):
    """A model in an org's registry: the versions that jobs with the same name (suffix) publish."""

    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_registered_models_org_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("regmodel"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    # The last version number handed out; bumped under the row's lock, so numbers never repeat.
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ModelVersion(Base):
    """One job's result under a registered model: gate-passing (published) or not (rejected)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        UniqueConstraint("job_id", name="uq_model_versions_job_id"),  # a retried publish adds none
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("modelver"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), nullable=True)  # None when rejected
    gate_passed: Mapped[bool] = mapped_column(Boolean)  # never changes once written
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # eval.gate verdict
    artifact_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ModelAlias(Base):
    """A movable name (`prod`, `staging`) for one gate-passing version of a registered model."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_alias"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("malias"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(32))
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now)


class DeviceAgent(Base):
    """A real device that measures an org's artifacts for one device profile (services/device_agents.py).
    It authenticates with its own key, which opens only the agent routes; only the key's sha256 is
    stored. `facts` are what the agent said of itself (CPU, cores, RAM, OS, runtime version)."""

    __tablename__ = "device_agents"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dagent"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    profile: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    last_seen_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class DeviceBenchmark(Base):
    """One GGUF to measure on an agent of `profile`: a published artifact (`artifact_id`), or a job's
    export before its gate (`job_id`, `target`; the file under `storage_key`). Queued, then running
    on one agent under a lease its heartbeats extend; a lease that lapses sends it back to the queue
    (another agent of the profile takes it) until `attempts` runs out. `result` holds the figures."""

    __tablename__ = "device_benchmarks"
    __table_args__ = (Index("ix_device_benchmarks_org_profile_status", "org_id", "profile", "status"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("devbench"))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    artifact_id: Mapped[str | None] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), nullable=True, index=True
    )
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True
    )
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(1024))
    profile: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|succeeded|failed
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)  # context, prompt and decode tokens
    agent_id: Mapped[str | None] = mapped_column(
        ForeignKey("device_agents.id", ondelete="SET NULL"), nullable=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    # when it last went into the queue (made, or sent back after a lapsed lease): the wait for an
    # agent counts from here
    queued_at: Mapped[int] = mapped_column(BigInteger, default=now)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
