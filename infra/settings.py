"""Settings from `EDGETUNE_*` environment variables, with embedded defaults that need no service.

Defaults put everything under `./var/`: a SQLite database, a SQLite-backed Celery broker (kombu's
SQLAlchemy transport) and a local artifact directory. Production sets PostgreSQL, Redis and S3.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where the CLI client and the MCP stdio server reach the API when EDGETUNE_API_URL is unset.
DEFAULT_API_URL = "http://127.0.0.1:8000"

# How a teacher is asked for an answer of a given JSON Schema (the round trip's label or object), by
# the request field its server reads: OpenAI's structured outputs (`response_format` of type
# `json_schema`; vLLM, llama.cpp's llama-server and most hosted APIs read it too), the `json_object`
# type with a `schema` that llama-cpp-python's server (the bundled teacher) reads, or not at all
# (the prompt alone asks for the form).
StructuredOutput = Literal["json_schema", "json_object", "off"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGETUNE_", extra="ignore")

    var_dir: Path = Field(default=Path("var"), description="Root of all local state.")
    database_url: str = Field(default="", description="SQLAlchemy URL; default sqlite:///<var>/edgetune.db")
    broker_url: str = Field(default="", description="Celery broker; default sqla+sqlite:///<var>/broker.db")
    queue: str = Field(
        default="edgetune",
        description="The Celery queue of synthetic datasets, the billing push and CPU work; with no "
        "compute_pools, of every job too.",
    )
    # Worker pools per compute class (infra/queue.py queue_for): a comma list of the classes the
    # operator runs workers of ("cpu", or price-book GPU classes: "l4-24gb,h100-80gb"). Each job goes
    # to the queue of the cheapest listed class its plan fits (or the class it names), and a worker
    # consumes its own class's queue (worker_compute). Empty: one queue, every job on `queue`.
    compute_pools: str = ""
    # With pools, a GPU job's stages that need no accelerator (domain/lists.py ACCELERATOR_STAGES)
    # are handed to the CPU queue (`queue`), so its GPU is held only while it trains and scores.
    # Off: every stage of a job runs on the worker of its class, as one queue does.
    cpu_stages_on_cpu_workers: bool = True
    # The operator's token for /v1/operator/* (pools, queue depth, live workers); unset, those
    # routes answer 404 as if absent. A tenant's API key never opens them.
    operator_token: str | None = None
    artifact_store: str = Field(default="", description="file:///dir or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(default=None, description="For S3-compatible servers (MinIO, moto).")
    s3_region: str = "us-east-1"
    models_dir: Path | None = Field(default=None, description="Local base-model weights: <dir>/<org>/<name>.")

    # Teacher LLM for synthesis: any OpenAI-compatible chat endpoint. Empty base URL means
    # "serve the bundled SmolLM2-135M-Instruct GGUF with llama.cpp on 127.0.0.1 for the job".
    teacher_base_url: str = ""
    teacher_model: str = "SmolLM2-135M-Instruct"
    teacher_api_key: str | None = None
    # How the round trip holds that teacher to an answer's JSON Schema (StructuredOutput above). The
    # bundled teacher is always asked the way its server reads (synth/llama_server.py).
    teacher_structured_output: StructuredOutput = "json_schema"

    # Pricing (USD) lives in the price book (infra/price_book.yaml, or this path); compute is billed
    # on measured wall seconds of each stage at the rate of the class the workers run on.
    price_book: Path | None = None
    # Device profiles (formats, quantizations, budgets): export/profiles.yaml, or this file.
    profiles: Path | None = None
    worker_compute: str = Field(
        default="cpu", description="What the workers train on: cpu, or a GPU class (h100-80gb, ...)."
    )
    # Multi-GPU jobs (recipes/distributed.py): a full fine-tune that fits no single GPU of a class
    # but fits N of one node trains on N (2, 4 or 8, at most max_gpus_per_job) as N processes. A
    # worker holding N GPUs (worker_gpus) takes its class's N-GPU jobs, queue "<queue>.<class>.xN".
    worker_gpus: int = Field(default=1, ge=1, le=8, description="GPUs this worker's node gives each job.")
    max_gpus_per_job: int = Field(
        default=8, ge=1, le=8, description="The most GPUs of one node the plan gives a job (1: never shard)."
    )
    # Device agents (services/device_agents.py): a running benchmark's lease, extended by the agent's
    # heartbeats; a lapsed lease sends the task to another agent of the profile, at most
    # device_task_attempts times; a task no agent takes within device_task_wait_s fails.
    device_lease_s: int = Field(default=60, ge=2, description="Seconds a task is held between heartbeats.")
    device_task_attempts: int = Field(default=3, ge=1, description="Agents a benchmark task is tried on.")
    device_task_wait_s: int = Field(default=1800, ge=1, description="How long a task waits for an agent.")
    device_agent_online_s: int = Field(default=90, ge=1, description="An agent seen this recently is online.")
    # A job's export waits this long for an online agent's figures before its gate falls back to
    # the host's (labelled as such); the job's budget and cancel are checked while it waits.
    device_measure_wait_s: int = Field(default=900, ge=1, description="Export's wait for device figures.")
    price_cpu_second: float | None = None  # overrides the book's cpu rate
    price_gpu_second: float | None = None  # overrides the book's rate for worker_compute
    price_teacher_1k_tokens: float | None = None

    # Billing: the usage ledger is the source of truth; Stripe is off unless an API key is set.
    stripe_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("EDGETUNE_STRIPE_API_KEY", "STRIPE_API_KEY")
    )
    stripe_api_base: str | None = Field(default=None, description="Override Stripe's API address (tests).")
    stripe_webhook_secret: str | None = None  # whsec_...: verifies POST /v1/webhooks/stripe
    stripe_meter_event_name: str = "edgetune_usage_microusd"  # the meter's event_name
    billing_push_interval_s: float = 60.0  # Celery beat period of the pending-usage push
    billing_push_batch: int = 100  # ledger rows per push transaction

    checkpoint_steps: int = 50  # optimizer steps between checkpoints (resume points)
    max_upload_bytes: int = 512 * 1024 * 1024
    job_heartbeat_s: float = 10.0
    job_stale_after_s: float = 120.0  # a running job whose heartbeat is older is resumed or failed
    job_max_attempts: int = 3
    # A queued job (or dataset) whose queue message was sent this long ago and which no worker has
    # taken is presumed to have lost its message (a Redis without persistence, a failover) and is
    # queued again by the reaper; a duplicate message is harmless, as a worker's claim is atomic.
    job_requeue_after_s: float = 600.0
    queue_retry_after_s: int = 30  # Retry-After of a create answered 503 because the queue is down

    # Live events (GET …/events as Server-Sent Events, services/event_streams.py): an open stream
    # reads the database every `event_stream_poll_s`, sends a keep-alive comment after
    # `event_stream_keepalive_s` of silence (proxies close idle connections), and ends after
    # `event_stream_max_s`, so a forgotten connection does not live forever; a client that still
    # wants events reconnects with Last-Event-ID and misses none.
    event_stream_poll_s: float = Field(default=1.0, gt=0)
    event_stream_keepalive_s: float = Field(default=15.0, gt=0)
    event_stream_max_s: float = Field(default=1800.0, gt=0)

    # Chat completions on fine-tuned models (services/chat_completions.py): loaded llama.cpp models
    # stay in memory, least recently used evicted first, while their GGUF files' bytes sum to at
    # most `inference_cache_mb` (a model larger than the budget is still served, alone). Each runs
    # with the artifact's context cap, at most `inference_max_context` tokens.
    inference_cache_mb: int = Field(default=2048, ge=0)
    inference_max_context: int = Field(default=4096, ge=64)
    inference_threads: int | None = Field(default=None, ge=1, description="llama.cpp threads per model.")

    # The web console (/console, services/console_sessions.py) signs its session cookies with this
    # secret; unset, each API process makes a random one, so sessions end when it restarts and
    # several API processes behind one address need it set (the same value in each).
    console_secret: str = ""

    # Fairness between orgs (services/limits.py): every authenticated call (REST, /v1/tools, MCP)
    # counts against `rate_limit`; plans, job and dataset creates, uploads and the tool calls that do
    # them also against `heavy_rate_limit`, and at most `max_concurrent_heavy` of them run at once per
    # org. Over any of them: 429 with Retry-After. Limits are in the `limits` package's notation
    # ("600/minute", "10/second"); the counters live in Redis when the broker is Redis (shared by
    # every API process) or in `rate_limit_storage` when set, else in the API process's memory.
    rate_limit: str = "3000/minute"
    heavy_rate_limit: str = "120/minute"
    max_concurrent_heavy: int = 4
    # Jobs and synthetic datasets an org may have queued or running at once; a create past it: 429.
    max_active_jobs: int = 16
    rate_limit_storage: str = ""

    # Outbound calls to tenant-given addresses (a dataset's teacher.base_url) go to public addresses
    # only; this comma list of CIDRs, IPs and host names is allowed besides (infra/outbound.py).
    outbound_allow: str = ""

    # /mcp refuses (421) a Host header it does not know, against DNS rebinding; localhost is always
    # allowed. Comma-separated Host values, e.g. "api.example.com,api.example.com:8443".
    mcp_allowed_hosts: str = ""

    @property
    def pool_classes(self) -> list[str]:
        return [c.strip() for c in self.compute_pools.split(",") if c.strip()]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'edgetune.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.var_dir / 'broker.db').resolve()}"

    @property
    def resolved_rate_limit_storage(self) -> str:
        if self.rate_limit_storage:
            return self.rate_limit_storage
        broker = self.resolved_broker_url
        return broker if broker.startswith(("redis://", "rediss://")) else "memory://"

    @property
    def resolved_artifact_store(self) -> str:
        return self.artifact_store or f"file://{(self.var_dir / 'store').resolve()}"

    @property
    def work_dir(self) -> Path:
        return (self.var_dir / "work").resolve()

    @property
    def model_cache_dir(self) -> Path:
        return (self.var_dir / "models").resolve()


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    return settings
