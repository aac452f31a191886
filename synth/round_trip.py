"""The round-trip check's rule: does the teacher, asked as the fine-tuned model will be (the row's
own system and user turns, temperature 0), give the row's answer? Its answer is read as the eval
reads the model's: a label by eval.classification.match_label, a JSON object by
eval.extraction.parse_json_object, and it agrees with an extraction row only when every field the
row states comes back with the same value (field F1 of 1)."""

from __future__ import annotations

from typing import Any

from domain.job_config import TaskSpec
from domain.lists import EVAL_TASKS
from eval.classification import match_label
from eval.extraction import field_f1, parse_json_object

# A label needs a few tokens (eval/runners.py gives one 16); an extraction answer the eval's own
# budget, so a teacher that writes the object out in full is not cut short.
LABEL_MAX_TOKENS = 16


def answer_budget(task: TaskSpec) -> int:
    """Max tokens of a round-trip answer for the task's type."""
    return LABEL_MAX_TOKENS if task.type == "classification" else EVAL_TASKS[task.task_type].max_new_tokens


def agrees(task: TaskSpec, answer: str, key: str | None, row: dict[str, Any]) -> bool:
    """Whether the teacher's `answer` is the row's: the label the text was written for (`key`), or
    the JSON object the row answers with, field for field."""
    if task.type == "classification":
        return match_label(answer, task.labels or []) == key
    reference = parse_json_object(row["messages"][-1]["content"])
    return reference is not None and field_f1(parse_json_object(answer), reference) == 1.0
