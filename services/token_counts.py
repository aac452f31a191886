"""A stored file's token counts for a plan, computed once per (file, base, method, max length).

Tokenizing a file with the base's chat template is the plan's costly part (seconds for thousands
of rows) and every create plans again. Files never change after upload, so the first plan stores
the counts (`file_token_counts`) and later plans — in any API process — read one row. Concurrent
plans of one uncached key in one process wait for the first instead of tokenizing beside it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.lists import METHODS, MethodType
from infra.db import get_sessionmaker
from infra.models import FileTokenCount, Org
from recipes.preference_data import as_chat_row
from recipes.token_count import TokenStats, count_tokens
from services.files import get_file, read_rows

Key = tuple[str, str, str, int]  # file id, base model id, method, max length

# Striped locks: bounded memory whatever the number of files; two keys sharing a stripe only wait.
_LOCKS = [threading.Lock() for _ in range(64)]


def _lock(key: Key) -> threading.Lock:
    return _LOCKS[hash(key) % len(_LOCKS)]


def _cached(session: Session, key: Key) -> TokenStats | None:
    file_id, model, method, max_length = key
    row = session.scalar(
        select(FileTokenCount).where(
            FileTokenCount.file_id == file_id,
            FileTokenCount.model == model,
            FileTokenCount.method == method,
            FileTokenCount.max_length == max_length,
        )
    )
    return None if row is None else TokenStats(row.rows, row.tokens, row.longest, row.truncated_rows)


def _store(key: Key, stats: TokenStats) -> None:
    """In a session of its own: the plan is a dry run, and the caller's transaction (a create)
    must commit or roll back only its own rows. A concurrent store of the same key wins; fine."""
    file_id, model, method, max_length = key
    with get_sessionmaker()() as session:
        session.add(
            FileTokenCount(
                file_id=file_id, model=model, method=method, max_length=max_length,
                rows=stats.rows, tokens=stats.tokens, longest=stats.longest,
                truncated_rows=stats.truncated_rows,
            )
        )  # fmt: skip
        try:
            session.commit()
        except IntegrityError:
            session.rollback()


def file_token_stats(
    *,
    session: Session,
    org: Org,
    file_id: str,
    param: str,
    method: MethodType,
    model: str,
    model_dir: Path,
    max_length: int,
) -> TokenStats:
    """Counts of the file's sequences as `method` trains on them (a DPO pair gives two: prompt +
    chosen, prompt + rejected). The first call for a key reads and checks the file (a file of the
    wrong kind is a 400 naming `param`), so a stored count also means the file fits the method."""
    get_file(session=session, org=org, file_id=file_id, param=param)  # the org owns it, every time
    key: Key = (file_id, model, method, max_length)
    with _lock(key):
        stats = _cached(session, key)
        if stats is not None:
            return stats
        rows = read_rows(session=session, org=org, file_id=file_id, param=param, method=method)
        if METHODS[method].rows == "preference":  # both answers of a pair are trained on
            rows = [as_chat_row(r, side) for r in rows for side in ("chosen", "rejected")]
        stats = count_tokens(model_dir, rows, max_length)
        _store(key, stats)
        return stats
