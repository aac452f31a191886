"""The two tables a task type is listed in (domain/lists.py TASKS, synth/tasks SYNTH_TASKS) agree,
and what reads them behaves per type as it did when each rule was written out by name."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from domain.job_config import TaskSpec
from domain.lists import EVAL_TASKS, TASK_KINDS, TASKS, TaskKind
from synth.generate import targets_for
from synth.tasks import SYNTH_TASKS
from synth.validate import row_problem

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SPECS: dict[str, dict[str, Any]] = {
    "classification": {"labels": ["yes", "no"]},
    "extraction": {"output_schema": {"type": "object", "properties": {"name": {"type": "string"}}}},
    "tool_calling": {"tools": [TOOL]},
    "chat": {},
}


def spec(kind: str, **extra: Any) -> TaskSpec:
    return TaskSpec.model_validate({"description": "A task for the tests.", **SPECS[kind], **extra})


def test_every_kind_is_in_both_tables_in_the_same_order() -> None:
    assert tuple(TASKS) == TASK_KINDS == tuple(SYNTH_TASKS)
    assert {f.answers for f in TASKS.values()} <= set(EVAL_TASKS)


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_a_round_trip_the_domain_promises_is_one_synthesis_can_run(kind: TaskKind) -> None:
    synth = SYNTH_TASKS[kind]
    assert (synth.agrees is not None) == TASKS[kind].round_trip
    assert (synth.round_trip_tokens > 0) == TASKS[kind].round_trip
    assert spec(kind, round_trip="measure").round_trips == TASKS[kind].round_trip


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_a_body_without_type_gets_it_from_its_answer_field(kind: TaskKind) -> None:
    task = spec(kind)
    assert task.type == kind
    assert task.task_type == TASKS[kind].answers


@pytest.mark.parametrize(
    ("kind", "field", "message"),
    [
        ("classification", "labels", "a classification task needs labels (at least 2)"),
        ("extraction", "output_schema", "an extraction task needs an output_schema"),
        ("tool_calling", "tools", "a tool_calling task needs tools (OpenAI function definitions)"),
    ],
)
def test_a_kind_without_its_field_is_refused_naming_it(kind: str, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        TaskSpec.model_validate({"description": "A task for the tests.", "type": kind})
    assert message in str(err.value)
    assert field in {str(e["loc"][0]) for e in err.value.errors()}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("labels", ["a", "b"], "labels apply to classification tasks, not chat"),
        ("output_schema", SPECS["extraction"]["output_schema"], "output_schema applies to extraction tasks"),
        ("tools", [TOOL], "tools apply to tool_calling tasks, not chat"),
    ],
)
def test_another_kinds_field_is_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TaskSpec.model_validate({"description": "A task for the tests.", "type": "chat", field: value})


def test_rows_balance_on_what_the_kind_names() -> None:
    assert targets_for(spec("classification", num_examples=9)) == {"yes": 5, "no": 4}
    assert targets_for(spec("tool_calling", num_examples=9)) == {"get_weather": 9}
    assert targets_for(spec("extraction", num_examples=9)) == {None: 9}
    assert targets_for(spec("chat", num_examples=9)) == {None: 9}


def row(answer: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": answer}],
        **extra,
    }


def test_each_kind_checks_its_own_answers() -> None:
    assert row_problem(spec("classification"), row("yes")) is None
    assert row_problem(spec("classification"), row("maybe")) == "label_not_in_set"
    assert row_problem(spec("extraction"), row('{"name": "Ada"}')) is None
    assert row_problem(spec("extraction"), row("Ada")) == "json_invalid"
    call = '<|tool_call_start|>[get_weather(city="Oslo")]<|tool_call_end|>'
    assert row_problem(spec("tool_calling"), row(call, tools=[TOOL])) is None
    assert row_problem(spec("tool_calling"), row('[get_weather(city="Oslo")]', tools=[TOOL])) == (
        "tool_call_unparsed"
    )
    assert row_problem(spec("tool_calling"), row(call)) == "invalid_row"  # the tools must be shown
    assert row_problem(spec("chat"), row("any reply at all")) is None
