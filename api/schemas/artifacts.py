from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


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


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: Literal["base", "fine-tuned"]
    details: dict[str, Any]
