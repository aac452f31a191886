from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from services.schemas.artifacts import ArtifactPublic, ArtifactStatus


# Shared properties of a registered model: its name is the jobs' `suffix`, else the base's short name
class RegisteredModelBase(BaseModel):
    name: str


# Properties to return via API
class RegisteredModelPublic(RegisteredModelBase):
    id: str
    object: Literal["registered_model"] = "registered_model"
    created_at: int
    updated_at: int
    latest_version: int
    aliases: dict[str, int] = Field(default_factory=dict)  # alias -> version number


# Properties to return via API: one job's result under a registered model
class ModelVersionPublic(BaseModel):
    id: str
    object: Literal["model_version"] = "model_version"
    model: str
    version: int
    created_at: int
    job_id: str
    fine_tuned_model: str | None  # None when the gate refused the version
    status: ArtifactStatus
    gate_passed: bool
    gate: dict[str, Any] | None  # the eval gate's verdict: checks, reasons, notes
    artifact_ids: list[str]
    artifacts: list[ArtifactPublic]


# Shared properties of an alias: which version it points at
class ModelAliasBase(BaseModel):
    version: int = Field(ge=1, le=2**31 - 1, description="A version of the model that passed its eval gate.")


# Properties to receive on PUT .../aliases/{alias}
class ModelAliasUpdate(ModelAliasBase):
    pass


# Properties to return via API: the alias and the version it resolves to, with its artifacts
class ModelAliasPublic(ModelAliasBase):
    object: Literal["model_alias"] = "model_alias"
    alias: str
    model: str
    created_at: int
    updated_at: int
    model_version: ModelVersionPublic
