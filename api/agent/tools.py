"""The agent tools, defined once: a pydantic input model, a pydantic output model and a thin function
over the same service layer the REST routes call. `mcp_server.py` serves them over MCP and
`api/routes/tools.py` as OpenAI function schemas plus `POST /v1/tools/{name}`; neither restates a
rule. Agent-driven fine-tuning has burned money with no dry run, no idempotency and no cap, so here
the plan is a tool of its own and create requires both an idempotency key and `budget_usd`."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator
from sqlalchemy.orm import Session

from domain.job_config import JobConfig
from infra.models import Org
from services import artifacts, device_benchmarks, files, jobs, limits, plans
from services import synthetic_datasets as datasets
from services.errors import EdgetuneError, InvalidRequest, NotFound
from services.schemas.artifacts import ArtifactPublic
from services.schemas.common import ListPublic
from services.schemas.device_agents import DeviceBenchmarkCreate, DeviceBenchmarkPublic
from services.schemas.files import FilePublic
from services.schemas.jobs import EventPublic, JobPublic
from services.schemas.plans import PlanPublic
from services.schemas.synthetic_datasets import SyntheticDatasetCreate, SyntheticDatasetPublic

PRESIGNED_URL_EXPIRES_S = 3600  # infra.storage's presigned_url default

# Service errors name REST parameters (a path segment, a header, a multipart field); a tool caller
# only knows the tool's argument names.
_PARAM_ALIASES = {"fine_tuning_job_id": "job_id", "Idempotency-Key": "idempotency_key", "file": "content"}


@dataclass
class ToolContext:
    session: Session
    org: Org
    api_url: str  # where the caller reaches the REST API, e.g. http://127.0.0.1:8000 (no /v1)


# ---- inputs ----------------------------------------------------------------------------------


class PlanFinetuneInput(JobConfig):
    """The job body, exactly as `POST /v1/fine_tuning/jobs/plan` takes it."""


class CreateFinetuneJobInput(JobConfig):
    """The job body plus what an agent must always send: an idempotency key and a budget cap."""

    idempotency_key: str = Field(
        min_length=1,
        max_length=256,
        description="Your name for this request; retrying with the same key returns the same job "
        "instead of starting (and paying for) a second one.",
    )
    budget_usd: float = Field(  # type: ignore[assignment]  # required here, optional over REST
        gt=0,
        le=100_000,
        description="Hard cap on this job's cost in USD: refused at create if the quote exceeds it, "
        "stopped with budget_exhausted if a running job reaches it.",
    )

    def to_config(self) -> JobConfig:
        return JobConfig.model_validate(self.model_dump(exclude={"idempotency_key"}))


class JobIdInput(BaseModel):
    job_id: str = Field(min_length=1, description="A fine-tuning job id (ftjob-...).")


class GetJobInput(JobIdInput):
    events: int = Field(default=5, ge=0, le=100, description="How many of the newest events to include.")


class ListArtifactsInput(BaseModel):
    job_id: str | None = Field(default=None, description="Only this job's artifacts.")
    after: str | None = Field(default=None, description="Cursor: the last artifact id of the previous page.")
    limit: int = Field(default=20, ge=1, le=100)


class GenerateSyntheticDataInput(SyntheticDatasetCreate):
    """The dataset body of `POST /v1/synthetic_datasets` plus a required cost cap: the teacher is
    billed per token, and an agent must say up front how much it may spend."""

    max_cost_usd: float = Field(
        gt=0,
        le=10_000,
        description="Hard cap on the teacher's cost in USD: generation stops when it is reached "
        "and the rows kept so far are stored.",
    )

    def to_body(self) -> SyntheticDatasetCreate:
        teacher = self.teacher.model_copy(update={"max_cost_usd": self.max_cost_usd})
        return SyntheticDatasetCreate(task=self.task, seed=self.seed, teacher=teacher)


class DatasetIdInput(BaseModel):
    dataset_id: str = Field(min_length=1, description="A synthetic dataset id (synth-...).")


class ArtifactIdInput(BaseModel):
    artifact_id: str = Field(min_length=1, description="An artifact id (art-...), from list_artifacts.")


class MeasureOnDeviceInput(BaseModel):
    artifact_id: str = Field(min_length=1, description="A GGUF artifact id (art-...), from list_artifacts.")
    profile: str | None = Field(default=None, description="Device profile; default: the artifact's target.")


class BenchmarkIdInput(BaseModel):
    benchmark_id: str = Field(min_length=1, description="A device benchmark id (devbench-...).")


class UploadTrainingFileInput(BaseModel):
    filename: str = Field(default="train.jsonl", description="Stored name; must end in .jsonl.")
    content: str | None = Field(
        default=None, description='JSONL text: one chat row per line, {"messages": [...]}.'
    )
    rows: list[dict[str, Any]] | None = Field(
        default=None, description="The rows as JSON objects instead of JSONL text."
    )

    @model_validator(mode="after")
    def _one_source(self) -> UploadTrainingFileInput:
        if (self.content is None) == (self.rows is None):
            raise ValueError("give exactly one of content (JSONL text) or rows (a list of objects)")
        return self

    def data(self) -> bytes:
        if self.rows is not None:
            return "".join(json.dumps(row) + "\n" for row in self.rows).encode()
        assert self.content is not None
        return self.content.encode()


# ---- outputs ---------------------------------------------------------------------------------


class JobOutput(JobPublic):
    """The job as `GET /v1/fine_tuning/jobs/{id}` returns it, plus its newest events."""

    recent_events: list[EventPublic] = Field(description="Newest first: stage changes, metrics, errors.")


class CreateFinetuneJobOutput(JobOutput):
    created: bool = Field(
        description="False when the idempotency key named an existing job: nothing new was started."
    )


class DownloadUrlOutput(BaseModel):
    artifact_id: str
    filename: str
    bytes: int
    sha256: str = Field(description="Check the downloaded file against this.")
    url: str
    requires_api_key: bool = Field(description="True: send 'Authorization: Bearer <key>' with the GET.")
    expires_in_s: int | None = Field(description="Seconds a presigned URL stays valid; None: no expiry.")


# ---- the tools -------------------------------------------------------------------------------


def plan_finetune(ctx: ToolContext, args: PlanFinetuneInput) -> PlanPublic:
    return plans.plan_job(session=ctx.session, org=ctx.org, config=args)


def _job_output(ctx: ToolContext, job_id: str, n_events: int) -> dict[str, Any]:
    job = jobs.get_job(session=ctx.session, org=ctx.org, job_id=job_id)
    events: list[EventPublic] = []
    if n_events:  # the events service pages with limit >= 1
        rows, _ = jobs.list_events(
            session=ctx.session, org=ctx.org, job_id=job.id, after=None, limit=n_events
        )
        events = [EventPublic.model_validate(e, from_attributes=True) for e in rows]
    return {**jobs.to_public(job).model_dump(), "recent_events": events}


def create_finetune_job(ctx: ToolContext, args: CreateFinetuneJobInput) -> CreateFinetuneJobOutput:
    job, created = jobs.submit_job(
        session=ctx.session, org=ctx.org, config=args.to_config(), idempotency_key=args.idempotency_key
    )
    return CreateFinetuneJobOutput(**_job_output(ctx, job.id, 5), created=created)


def get_job(ctx: ToolContext, args: GetJobInput) -> JobOutput:
    return JobOutput(**_job_output(ctx, args.job_id, args.events))


def cancel_job(ctx: ToolContext, args: JobIdInput) -> JobOutput:
    jobs.cancel_job(session=ctx.session, org=ctx.org, job_id=args.job_id)
    return JobOutput(**_job_output(ctx, args.job_id, 5))


def list_artifacts(ctx: ToolContext, args: ListArtifactsInput) -> ListPublic[ArtifactPublic]:
    rows, has_more = artifacts.list_artifacts(
        session=ctx.session, org=ctx.org, job_id=args.job_id, after=args.after, limit=args.limit
    )
    data = [artifacts.to_public(a) for a in rows]
    return ListPublic.of(data, has_more)


def get_artifact_download_url(ctx: ToolContext, args: ArtifactIdInput) -> DownloadUrlOutput:
    """A presigned URL when the store has one (S3); otherwise the API's own streaming endpoint."""
    row = artifacts.get_artifact(session=ctx.session, org=ctx.org, artifact_id=args.artifact_id)
    a = artifacts.to_public(row)
    return DownloadUrlOutput(
        artifact_id=a.id,
        filename=a.filename,
        bytes=a.bytes,
        sha256=a.sha256,
        url=a.download_url or f"{ctx.api_url}/v1/artifacts/{a.id}/content",
        requires_api_key=a.download_url is None,
        expires_in_s=PRESIGNED_URL_EXPIRES_S if a.download_url else None,
    )


def generate_synthetic_data(ctx: ToolContext, args: GenerateSyntheticDataInput) -> SyntheticDatasetPublic:
    ds = datasets.submit_dataset(session=ctx.session, org=ctx.org, body=args.to_body())
    return datasets.to_public(ds)


def get_synthetic_dataset(ctx: ToolContext, args: DatasetIdInput) -> SyntheticDatasetPublic:
    ds = datasets.get_dataset(session=ctx.session, org=ctx.org, dataset_id=args.dataset_id)
    return datasets.to_public(ds)


def upload_training_file(ctx: ToolContext, args: UploadTrainingFileInput) -> FilePublic:
    f = files.create_file(
        session=ctx.session, org=ctx.org, filename=args.filename, purpose="fine-tune", data=args.data()
    )
    return files.to_public(f)


def measure_on_device(ctx: ToolContext, args: MeasureOnDeviceInput) -> DeviceBenchmarkPublic:
    body = DeviceBenchmarkCreate(artifact_id=args.artifact_id, profile=args.profile)
    return device_benchmarks.to_public(
        device_benchmarks.create_benchmark(session=ctx.session, org=ctx.org, body=body)
    )


def get_device_benchmark(ctx: ToolContext, args: BenchmarkIdInput) -> DeviceBenchmarkPublic:
    task = device_benchmarks.get_benchmark(session=ctx.session, org=ctx.org, benchmark_id=args.benchmark_id)
    return device_benchmarks.to_public(task)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input: type[BaseModel]
    output: type[BaseModel]
    fn: Callable[[ToolContext, Any], BaseModel]
    read_only: bool = False
    destructive: bool = False
    heavy: bool = False  # tokenizes, copies or queues: takes one of the org's heavy slots (limits.py)


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "plan_finetune",
            "Dry run of a fine-tuning job: real token counts, resolved hyperparameters, whether it fits "
            "the workers' GPU, seconds per stage and an itemised USD quote, with the budget check create "
            "would apply. Free; nothing is stored or started. Call it before create_finetune_job.",
            PlanFinetuneInput,
            PlanPublic,
            plan_finetune,
            read_only=True,
            heavy=True,
        ),
        ToolSpec(
            "create_finetune_job",
            "Start a fine-tune (LoRA or full; supervised or DPO) of an LFM base model on a "
            "training_file (from upload_training_file or generate_synthetic_data) or a task "
            "description, gated by an eval and exported per device target. Requires "
            "idempotency_key (reuse it on retries) and budget_usd (the job is refused if its quote "
            "exceeds it and stopped if it reaches it). Returns at once with the job id; poll "
            "get_job until status is succeeded, failed or cancelled.",
            CreateFinetuneJobInput,
            CreateFinetuneJobOutput,
            create_finetune_job,
            heavy=True,
        ),
        ToolSpec(
            "get_job",
            "A fine-tuning job's status (validating_files, queued, running, succeeded, failed, "
            "cancelled), current stage, cost so far, error, and its newest events.",
            GetJobInput,
            JobOutput,
            get_job,
            read_only=True,
        ),
        ToolSpec(
            "cancel_job",
            "Cancel a job that has not finished: immediate; work already done stays billed, the "
            "running stage is not, and nothing is published.",
            JobIdInput,
            JobOutput,
            cancel_job,
            destructive=True,
        ),
        ToolSpec(
            "list_artifacts",
            "A finished job's device artifacts (one per target): format, quantization, size, sha256 "
            "and each artifact's own eval score.",
            ListArtifactsInput,
            ListPublic[ArtifactPublic],
            list_artifacts,
            read_only=True,
        ),
        ToolSpec(
            "get_artifact_download_url",
            "A URL to download one artifact: presigned (no key needed, expires) when the store is "
            "S3, else the API's streaming endpoint (send your API key).",
            ArtifactIdInput,
            DownloadUrlOutput,
            get_artifact_download_url,
            read_only=True,
        ),
        ToolSpec(
            "upload_training_file",
            'Upload chat training rows ({"messages": [{"role", "content"}, ...]}) as JSONL '
            "text or a list of objects; every row is validated and a bad file is refused whole, "
            "naming each bad line. Returns the file id for create_finetune_job's training_file.",
            UploadTrainingFileInput,
            FilePublic,
            upload_training_file,
            heavy=True,
        ),
        ToolSpec(
            "generate_synthetic_data",
            "Generate a training and an eval file from a task spec (classification with labels, "
            "extraction with a JSON Schema, tool_calling with OpenAI tool definitions, or chat with "
            "a rubric) using a teacher LLM; every row is validated, de-duplicated and its "
            "provenance recorded. Requires max_cost_usd. Returns at once with the dataset id; poll "
            "get_synthetic_dataset until status is succeeded, then pass its training_file and "
            "validation_file to create_finetune_job.",
            GenerateSyntheticDataInput,
            SyntheticDatasetPublic,
            generate_synthetic_data,
            heavy=True,
        ),
        ToolSpec(
            "get_synthetic_dataset",
            "A synthetic dataset's status, progress (rows kept of wanted), report (generated, kept, "
            "dropped by reason, label distribution, teacher tokens and cost) and, once succeeded, "
            "its training_file and validation_file ids.",
            DatasetIdInput,
            SyntheticDatasetPublic,
            get_synthetic_dataset,
            read_only=True,
        ),
        ToolSpec(
            "measure_on_device",
            "Queue a GGUF artifact to be measured on a real device: one of your device agents of the "
            "profile (edgetune device-agent) loads it and reports prefill and decode tokens/s, peak "
            "memory and load time with its device's facts. Returns at once; poll get_device_benchmark.",
            MeasureOnDeviceInput,
            DeviceBenchmarkPublic,
            measure_on_device,
        ),
        ToolSpec(
            "get_device_benchmark",
            "A device benchmark's status (queued, running, succeeded, failed) and, once succeeded, the "
            "figures measured on the device; failed says why (no agent of the profile, agent lost).",
            BenchmarkIdInput,
            DeviceBenchmarkPublic,
            get_device_benchmark,
            read_only=True,
        ),
    )
}


def invalid_arguments(exc: ValidationError) -> InvalidRequest:
    """Pydantic's errors as one 400 that names each bad field, as the REST API reports a bad body."""
    errors = exc.errors()
    fields = [".".join(str(p) for p in e["loc"]) for e in errors]
    message = "; ".join(f"{f or 'arguments'}: {e['msg']}" for f, e in zip(fields, errors, strict=True))
    return InvalidRequest(message, param=fields[0] if fields else None, code="invalid_value")


def run_tool(ctx: ToolContext, name: str, arguments: dict[str, Any]) -> BaseModel:
    """Validate `arguments` against the tool's input model and run it; errors are EdgetuneErrors."""
    spec = TOOLS.get(name)
    if spec is None:
        raise NotFound(
            f"No such tool: {name!r}; tools are {', '.join(TOOLS)}", param="name", code="tool_not_found"
        )
    try:
        args = spec.input.model_validate(arguments)
    except ValidationError as exc:
        raise invalid_arguments(exc) from None
    try:
        with limits.heavy_slot(ctx.org) if spec.heavy else nullcontext():
            return spec.fn(ctx, args)
    except EdgetuneError as exc:
        exc.param = _PARAM_ALIASES.get(exc.param or "", exc.param)
        raise


def error_text(exc: EdgetuneError) -> str:
    """One line for a tool error: the service's message, then the argument and code it names."""
    detail = ", ".join(f"{k}: {v}" for k, v in (("param", exc.param), ("code", exc.code)) if v)
    return f"{exc.message} ({detail})" if detail else exc.message


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    # Many function-calling clients reject $ref; the job models are not recursive, so inlining ends.
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            return _inline_refs({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def parameters_schema(spec: ToolSpec) -> dict[str, Any]:
    schema = spec.input.model_json_schema()
    return dict(_inline_refs(schema, schema.get("$defs", {})))


def openai_tool(spec: ToolSpec, shape: str = "chat") -> dict[str, Any]:
    """OpenAI function-calling schema: Chat Completions nests the function, Responses is flat."""
    # not strict: strict mode needs every property required, and most of a job's fields have defaults
    function = {
        "name": spec.name,
        "description": spec.description,
        "parameters": parameters_schema(spec),
        "strict": False,
    }
    if shape == "responses":
        return {"type": "function", **function}
    return {"type": "function", "function": function}
