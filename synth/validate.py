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
from domain.tool_calls import parse_tool_calls
from recipes.chat_data import TOOL_CALL_END, TOOL_CALL_START, to_lfm_tool_call


def lfm_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """`<|tool_call_start|>[name(a="x", n=3)]<|tool_call_end|>`, as LFM2 writes a call."""
    return to_lfm_tool_call([{"function": {"name": name, "arguments": arguments}}])


def answer_of(row: dict[str, Any]) -> str:
    return str(row["messages"][-1].get("content") or "")


def row_problem(task: TaskSpec, row: dict[str, Any]) -> str | None:
    """A drop reason (`invalid_row`, `label_not_in_set`, `json_invalid`, `schema_invalid`,
    `tool_call_unparsed`, `unknown_tool`, `arguments_invalid`), or None when the row is good.
    Whether the answer is valid is the domain's rule (domain/answers.py); what is checked
    here only is the row around it."""
    if check_row(row) is not None or row["messages"][-1].get("role") != "assistant":
        return "invalid_row"
    answer = answer_of(row)
    if task.type == "tool_calling":
        # The markers are required: they are special tokens the runtime parses on, and a row
        # without them would teach the model to print a bare list.
        if not (answer.startswith(TOOL_CALL_START) and answer.endswith(TOOL_CALL_END)):
            return "tool_call_unparsed"
        if parse_tool_calls(answer) and row.get("tools") != task.tools:
            return "invalid_row"  # the model must see the tools it is taught to call
    if task.type == "chat":
        return None
    problem = answer_problem(
        task.type, answer, labels=task.labels, output_schema=task.output_schema, tools=task.tool_schemas()
    )
    return problem.code if problem else None
