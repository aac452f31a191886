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

    @classmethod
    def of(cls, data: list[T], has_more: bool) -> ListPublic[T]:
        """A page of public objects (each with an `id`), its cursors taken from its ends."""
        first = getattr(data[0], "id", None) if data else None
        last = getattr(data[-1], "id", None) if data else None
        return cls(data=data, has_more=has_more, first_id=first, last_id=last)


class DeletedPublic(BaseModel):
    id: str
    object: str
    deleted: bool = True
