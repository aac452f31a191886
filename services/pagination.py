"""Cursor pagination shared by every list endpoint: newest first, `after` is the last id seen."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from services.errors import InvalidRequest

T = TypeVar("T")
MAX_LIMIT = 100


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    return limit


def page(
    session: Session, stmt: Select[Any], order_cols: tuple[Any, Any], after_row: Any | None, limit: int
) -> tuple[list[Any], bool]:
    """Rows of `stmt` ordered by (order_cols) descending, strictly after `after_row`."""
    first, second = order_cols
    if after_row is not None:
        a, b = getattr(after_row, first.key), getattr(after_row, second.key)
        stmt = stmt.where(or_(first < a, and_(first == a, second < b)))
    rows = list(session.scalars(stmt.order_by(first.desc(), second.desc()).limit(check_limit(limit) + 1)))
    return rows[:limit], len(rows) > limit
