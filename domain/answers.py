"""The rule for whether an answer is valid for a task: a label from the set, a JSON object valid
against the schema, or LFM tool-call text calling known tools with valid arguments.

One rule, read in two places: a job's seed examples are refused with its message
(domain/job_config.py), and a synthesized row is dropped with its code (synth/validate.py).
The eval scores the same forms (eval/metrics.py) and the grammar constrains a device to them
(eval/grammar.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from domain.json_schema import schema_errors
from domain.lists import TASKS
from domain.tool_calls import parse_tool_calls


@dataclass(frozen=True)
class AnswerProblem:
    code: str  # label_not_in_set, json_invalid, schema_invalid, tool_call_unparsed, unknown_tool, ...
    message: str  # for a person, with the answer called "output"


def answer_problem(
    kind: str | None,
    answer: Any,
    *,
    labels: list[str] | None = None,
    output_schema: dict[str, Any] | None = None,
    tools: dict[str, dict[str, Any]] | None = None,
) -> AnswerProblem | None:
    """Why `answer` is not a valid answer for a task of `kind`, or None. `tools` maps each tool's
    name to its OpenAI `function` object; an extraction answer may be JSON text or the object.
    The rule goes by the answer's form (domain/lists.py TASKS): chat's is free text."""
    form = TASKS[kind].answers if kind in TASKS else None
    if form == "classification":
        if answer in (labels or []):
            return None
        return AnswerProblem("label_not_in_set", f"output {answer!r} is not one of the labels")
    if form == "extraction":
        return _extraction_problem(answer, output_schema or {})
    if form == "tool_calling":
        return _tool_call_problem(answer, tools or {})
    return None if isinstance(answer, str) else AnswerProblem("not_text", "output must be a string")


def _extraction_problem(answer: Any, schema: dict[str, Any]) -> AnswerProblem | None:
    try:
        value = json.loads(answer) if isinstance(answer, str) else answer
    except ValueError:
        return AnswerProblem("json_invalid", "output is not valid JSON")
    if not isinstance(value, dict):
        return AnswerProblem("json_invalid", "output must be a JSON object")
    if errors := schema_errors(value, schema):
        return AnswerProblem("schema_invalid", f"output does not match output_schema: {'; '.join(errors)}")
    return None


def _tool_call_problem(answer: Any, tools: dict[str, dict[str, Any]]) -> AnswerProblem | None:
    calls = parse_tool_calls(answer) if isinstance(answer, str) else None
    if not calls:
        return AnswerProblem(
            "tool_call_unparsed", 'output must be LFM tool-call text, e.g. [get_weather(city="Boston")]'
        )
    for call in calls:
        if call.name not in tools:
            return AnswerProblem("unknown_tool", f"output calls {call.name!r}, which is not in tools")
        if errors := schema_errors(call.arguments, tools[call.name]["parameters"]):
            return AnswerProblem(
                "arguments_invalid", f"output's arguments to {call.name}: {'; '.join(errors)}"
            )
    return None
