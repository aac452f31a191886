"""Device agents and their benchmark tasks (issue 18): what the org's key sends and reads on
/v1/device_agents and /v1/device_benchmarks, and what an agent's own key sends and reads on
/v1/device_agent/*."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BenchmarkStatus = Literal["queued", "running", "succeeded", "failed"]


# Properties to receive on POST /v1/device_agents (org key)
class DeviceAgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, description="A label, e.g. 'pi5-bench-1'.")
    profile: str = Field(min_length=1, max_length=64, description="The device profile it measures for.")


# Properties to return via API: never the key
class DeviceAgentPublic(BaseModel):
    id: str
    object: Literal["device_agent"] = "device_agent"
    name: str
    profile: str
    prefix: str
    online: bool  # seen within settings.device_agent_online_s
    facts: dict[str, Any] | None  # what it said of itself: CPU, cores, RAM, OS, runtime
    created_at: int
    last_seen_at: int | None
    revoked_at: int | None


class DeviceAgentCreated(DeviceAgentPublic):
    key: str  # shown once: the agent's own key, which opens only /v1/device_agent/*


# What an agent says of itself on POST /v1/device_agent/hello
class DeviceFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str = Field(description="The profile the agent was started for; must be its key's.")
    cpu: str | None = Field(default=None, max_length=256)
    cores: int | None = Field(default=None, ge=1)
    ram_mb: int | None = Field(default=None, ge=1)
    os: str | None = Field(default=None, max_length=256)
    machine: str | None = Field(default=None, max_length=64)
    runtime: str = Field(max_length=64, description="e.g. 'llama.cpp'.")
    runtime_version: str | None = Field(default=None, max_length=64)
    threads: int | None = Field(default=None, ge=1, description="Threads the agent measures with.")


# What to measure: the profile's context and a fixed prompt and decode length
class BenchmarkSettings(BaseModel):
    context: int = Field(gt=0)
    prompt_tokens: int = Field(gt=0)
    decode_tokens: int = Field(gt=0)


# Properties to receive on POST /v1/device_benchmarks (org key)
class DeviceBenchmarkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifact_id: str = Field(description="The artifact id to measure (a GGUF).")
    profile: str | None = Field(default=None, description="Default: the profile the artifact was made for.")
    prompt_tokens: int = Field(default=128, ge=1, le=8192)
    decode_tokens: int = Field(default=64, ge=1, le=2048)


# An agent's measurements on POST /v1/device_agent/tasks/{id}/result
class BenchmarkResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefill_tokens_per_s: float = Field(gt=0)
    decode_tokens_per_s: float = Field(gt=0)
    peak_memory_mb: float | None = Field(default=None, ge=0)
    load_seconds: float | None = Field(default=None, ge=0, description="None: not timed (llama-bench).")
    context: int = Field(gt=0)
    prompt_tokens: int = Field(gt=0)
    decode_tokens: int = Field(gt=0)
    runtime: str = Field(max_length=64)
    runtime_version: str | None = Field(default=None, max_length=64)
    threads: int | None = Field(default=None, ge=1)
    # llama-bench's name for it; the device model's prefill cost per token is twice this
    model_n_params: int | None = Field(default=None, gt=0, description="The model's parameter count.")


class BenchmarkFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=4000)


class DeviceBenchmarkPublic(BaseModel):
    id: str
    object: Literal["device_benchmark"] = "device_benchmark"
    artifact_id: str | None  # a published artifact, or
    job_id: str | None  # a job's export measured before its gate
    target: str | None
    sha256: str
    profile: str
    status: BenchmarkStatus
    settings: BenchmarkSettings
    agent_id: str | None
    attempts: int
    result: dict[str, Any] | None  # BenchmarkResult plus the agent's facts and id
    error: dict[str, Any] | None
    created_at: int
    finished_at: int | None


# A task as the agent that claimed it sees it
class BenchmarkTask(BaseModel):
    id: str
    object: Literal["device_benchmark_task"] = "device_benchmark_task"
    artifact_id: str | None
    filename: str
    bytes: int
    sha256: str
    download_url: str  # presigned, or the API's own stream for this task
    download_needs_key: bool  # the API's stream: send the agent's key (never to a presigned URL)
    settings: BenchmarkSettings
    lease_expires_at: int
    heartbeat_every_s: int
