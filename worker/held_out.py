"""A job's held-out rows and how they are scored: read by the evaluate stage and by the training
process (checkpoint selection), so it lives apart from both."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.job_config import MAX_EVAL_ROWS, JobConfig
from domain.lists import METHODS
from services import files as file_service

if TYPE_CHECKING:
    from eval.scoring import HeldOut


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Chat rows or preference pairs, whichever the file holds (checked when the job was created)."""
    data = path.read_bytes()
    rows, _ = file_service.parse_rows(data, file_service.file_format(data))
    return rows


def held_out_rows(config: JobConfig, path: Path) -> HeldOut:
    """The held-out rows in `path` and how to score them: by label accuracy when the answers are a
    small label set (a task with labels, or an upload whose answers repeat), else by token F1."""
    rows = read_rows(path)[:MAX_EVAL_ROWS]
    if METHODS[config.method.type].rows == "preference":  # scored on matching the chosen answers
        from recipes.preference_data import as_chat_row

        rows = [as_chat_row(r) for r in rows]
    if config.task is not None:
        return rows, config.task.task_type, config.task.labels
    answers = [r["messages"][-1].get("content") or "" for r in rows]
    distinct = sorted(set(answers))
    if (
        len(distinct) <= 20
        and len(distinct) < max(len(answers) / 2, 2)
        and all(len(a) < 64 for a in distinct)
    ):
        return rows, "classification", distinct
    return rows, "generation", None
