from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel

# "published": its job passed the eval gate. "rejected": the gate refused it; kept to inspect and
# download, never the target of a registry alias.
ArtifactStatus = Literal["published", "rejected"]
ARTIFACT_STATUSES: tuple[str, ...] = get_args(ArtifactStatus)


# Properties to return via API: one downloadable file per device target
class ArtifactPublic(BaseModel):
    id: str
    object: Literal["artifact"] = "artifact"
    created_at: int
    job_id: str
    target: str
    format: str
    quantization: str | None
    filename: str
    bytes: int
    sha256: str
    eval: dict[str, Any] | None = None
    download_url: str | None = None
    status: ArtifactStatus = "published"


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: Literal["base", "fine-tuned"]
    details: dict[str, Any]
