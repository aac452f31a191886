"""The last gate before a synthesized row is kept: does it teach the task correctly?

`row_problem(task, row)` parses the row's answer the way eval and an LFM runtime will and checks it
against the task: a label from the set, a JSON object valid against the schema, an LFM tool call
that parses (domain.tool_calls) to a known tool with arguments valid against that tool's parameters
(domain.json_schema). Rows built correct by construction pass it too; it runs on them anyway,
because it is what the tests and a customer's trust rely on.
"""

from __future__ import annotations

from typing import Any

from domain.answers import answer_problem
from domain.chat_rows import check_row
from domain.job_config import TaskSpec
from domain.lists import TASKS
from synth.tasks import SYNTH_TASKS


def answer_of(row: dict[str, Any]) -> str:
    return str(row["messages"][-1].get("content") or "")


def row_problem(task: TaskSpec, row: dict[str, Any]) -> str | None:
    """A drop reason (`invalid_row`, `label_not_in_set`, `json_invalid`, `schema_invalid`,
    `tool_call_unparsed`, `unknown_tool`, `arguments_invalid`), or None when the row is good.
    Whether the answer is valid is the domain's rule (domain/answers.py); what is checked
    here only is the row around it, and what the task's type checks besides (synth/tasks/)."""
    if check_row(row) is not None or row["messages"][-1].get("role") != "assistant":
        return "invalid_row"
    own = SYNTH_TASKS[task.type].row_problem
    if own is not None and (problem_code := own(task, row)):
        return problem_code
    if TASKS[task.type].answers == "generation":
        return None  # free text: any reply the filters kept
    problem = answer_problem(
        task.type,
        answer_of(row),
        labels=task.labels,
        output_schema=task.output_schema,
        tools=task.tool_schemas(),
    )
    return problem.code if problem else None
