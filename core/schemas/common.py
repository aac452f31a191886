from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


# A cursor page, as OpenAI returns lists: newest first, `after` = last id of the previous page.
class ListPublic(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class DeletedPublic(BaseModel):
    id: str
    object: str
    deleted: bool = True
