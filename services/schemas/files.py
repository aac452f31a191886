from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

PURPOSES = ("fine-tune",)


# Shared properties of an uploaded file
class FileBase(BaseModel):
    filename: str
    purpose: str


# Properties to return via API (OpenAI's FileObject, plus the validated row count)
class FilePublic(FileBase):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    status: Literal["processed"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None
    sha256: str
    row_count: int
