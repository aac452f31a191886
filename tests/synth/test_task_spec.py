"""TaskSpec: explicit types, the per-type fields validated (schemas as schemas, tools by name),
seeds checked against the task, and the bodies written before `type` existed still accepted."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from domain.job_config import JobConfig, TaskSpec

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def error(**body: Any) -> tuple[str, str]:
    """(field, message) of the first validation error."""
    with pytest.raises(ValidationError) as exc:
        TaskSpec.model_validate({"description": "A task for the tests.", **body})
    first = exc.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"]


def test_legacy_bodies_infer_type_and_stay_version_1() -> None:
    labelled = TaskSpec.model_validate({"description": "Classify reviews.", "labels": ["good", "bad"]})
    free = TaskSpec.model_validate({"description": "Answer cooking questions.", "num_examples": 16})
    assert (labelled.type, labelled.version, labelled.task_type) == ("classification", 1, "classification")
    assert (free.type, free.version, free.task_type) == ("chat", 1, "generation")
    # stored with type and version, the config reads back the same (a job's config is replayed)
    assert TaskSpec.model_validate(labelled.model_dump(mode="json")) == labelled
    job = JobConfig.model_validate(
        {"model": "m", "task": {"description": "Classify it.", "labels": ["a", "b"]}}
    )
    assert job.task is not None and job.task.version == 1


def test_new_fields_make_version_2_and_infer_the_type() -> None:
    assert TaskSpec(description="Extract names from text.", output_schema=SCHEMA).type == "extraction"
    spec = TaskSpec(description="Call tools for the user.", tools=[TOOL], language="fr")
    assert (spec.type, spec.version, spec.task_type) == ("tool_calling", 2, "tool_calling")


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"type": "classification"}, "labels", "needs labels"),
        ({"type": "classification", "labels": ["a"]}, "labels", "at least 2"),
        ({"type": "classification", "labels": ["a", "A"]}, "labels", "distinct"),
        ({"type": "chat", "labels": ["a", "b"]}, "labels", "not chat"),
        ({"labels": ["a", "b"], "label_descriptions": {"c": "?"}}, "label_descriptions", "not labels"),
        ({"type": "extraction"}, "output_schema", "needs an output_schema"),
        (
            {"type": "extraction", "output_schema": {"type": "objekt"}},
            "output_schema",
            "'objekt' is not a JSON type",
        ),
        (
            {"type": "extraction", "output_schema": {"type": "object", "properties": {"a": 1}}},
            "output_schema",
            "output_schema.properties.a: a schema must be a JSON object",
        ),
        (
            {"output_schema": {"type": "object", "properties": {"a": {}}, "required": ["b"]}},
            "output_schema",
            "['b'] not defined in properties",
        ),
        ({"output_schema": {"type": "array", "items": {}}}, "output_schema", "must be 'object'"),
        ({"type": "tool_calling"}, "tools", "needs tools"),
        (
            {"tools": [{"type": "function", "function": {"description": "no name"}}]},
            "tools",
            "tools[0].function.name: every tool needs a name",
        ),
        ({"tools": [{"name": "get weather"}]}, "tools", "must be an identifier"),
        ({"tools": [TOOL, TOOL]}, "tools", "distinct"),
        (
            {
                "tools": [
                    {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "str"}}}}
                ]
            },
            "tools",
            "tools[0].function.parameters.properties.x.type",
        ),
        ({"type": "potato"}, "type", "classification"),
        ({"language": "English"}, "language", "pattern"),
        ({"constraints": [""]}, "constraints", "non-empty"),
        (
            {"labels": ["a", "b"], "seed_examples": [{"input": "x", "output": "c"}]},
            "seed_examples",
            "not one of",
        ),
        (
            {"output_schema": SCHEMA, "seed_examples": [{"input": "x", "output": {"nom": "y"}}]},
            "seed_examples",
            "missing required 'name'",
        ),
        (
            {"tools": [TOOL], "seed_examples": [{"input": "rain?", "output": '[get_weather(town="Oslo")]'}]},
            "seed_examples",
            "seed_examples[0]: output's arguments to get_weather",
        ),
        (
            {"tools": [TOOL], "seed_examples": [{"input": "x", "output": "sunny"}]},
            "seed_examples",
            "LFM tool-call",
        ),
    ],
)
def test_invalid_specs_name_their_field(body: dict[str, Any], field: str, needle: str) -> None:
    loc, msg = error(**body)
    assert loc == field and needle in msg, (loc, msg)


def test_tools_are_normalised_to_openai_form() -> None:
    spec = TaskSpec(description="Call tools for the user.", tools=[{"name": "ping"}])
    assert spec.tools == [
        {
            "type": "function",
            "function": {
                "name": "ping",
                "description": "",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    seeded = TaskSpec(
        description="Call tools for the user.",
        tools=[TOOL],
        seed_examples=[
            {
                "input": "Rain in Oslo?",
                "output": '<|tool_call_start|>[get_weather(city="Oslo")]<|tool_call_end|>',
            }
        ],
    )
    assert seeded.tool_schemas()["get_weather"]["parameters"] == TOOL["function"]["parameters"]
