"""The limits in domain/job_config.py: spec sizes, schema size/depth/$ref cycles, metadata, JSON
nesting (issue 19, item 6). No database: the rules live in the config model."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from domain.job_config import (
    MAX_JSON_DEPTH,
    MAX_LABEL_LENGTH,
    MAX_LABELS,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    MAX_TOOLS,
    JobConfig,
    TaskSpec,
    json_depth_exceeds,
    schema_limit_problems,
)


def _loc(body: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as exc:
        JobConfig.model_validate({"model": "m", **body})
    first = exc.value.errors()[0]
    return tuple(first["loc"]), str(first["msg"])


def _tool(i: int, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    fn = {"name": f"t{i}", "parameters": parameters or {"type": "object", "properties": {}}}
    return {"type": "function", "function": fn}


def _nest(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_json_depth_counts_brackets_outside_strings() -> None:
    assert not json_depth_exceeds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_depth_exceeds(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert not json_depth_exceeds(b'{"a": "' + b"[{" * 500 + b'", "b": "\\"[[["}')
    assert json_depth_exceeds(b'{"a": "\\\\", "b": ' + b"[" * 100 + b"]" * 100 + b"}")


def test_labels_count_and_length() -> None:
    task = {"description": "Classify the review."}
    many = [f"l{i}" for i in range(MAX_LABELS + 1)]
    loc, _ = _loc({"task": {**task, "labels": many}})
    assert loc == ("task", "labels")
    loc, msg = _loc({"task": {**task, "labels": ["a", "b" * (MAX_LABEL_LENGTH + 1)]}})
    assert loc == ("task", "labels") and f"at most {MAX_LABEL_LENGTH}" in msg
    assert TaskSpec(**task, labels=[f"l{i}" for i in range(MAX_LABELS)]).labels


def test_tools_count_and_schema_limits() -> None:
    task = {"description": "Call the right tool."}
    loc, _ = _loc({"task": {**task, "tools": [_tool(i) for i in range(MAX_TOOLS + 1)]}})
    assert loc == ("task", "tools")
    assert TaskSpec(**task, tools=[_tool(i) for i in range(MAX_TOOLS)]).tools
    loc, msg = _loc({"task": {**task, "tools": [_tool(0, _nest(MAX_SCHEMA_DEPTH))]}})
    assert loc == ("task", "tools") and "deeper" in msg and "tools[0].function.parameters" in msg
    big = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(MAX_SCHEMA_BYTES // 10)},
    }
    loc, msg = _loc({"task": {**task, "tools": [_tool(0, big)]}})
    assert loc == ("task", "tools") and "byte limit" in msg
    long_name = {"type": "function", "function": {"name": "t" * 65}}
    assert _loc({"task": {**task, "tools": [long_name]}})[0] == ("task", "tools")


def test_output_schema_depth_size_and_ref_cycles() -> None:
    task = {"description": "Extract the fields."}
    loc, msg = _loc({"task": {**task, "output_schema": _nest(MAX_SCHEMA_DEPTH)}})
    assert loc == ("task", "output_schema") and "deeper" in msg
    selfref = {"type": "object", "properties": {"child": {"$ref": "#"}}}
    loc, msg = _loc({"task": {**task, "output_schema": selfref}})
    assert loc == ("task", "output_schema") and "cycle" in msg
    assert TaskSpec(**task, output_schema=_nest(MAX_SCHEMA_DEPTH // 2 - 1)).output_schema


def test_ref_rules() -> None:
    defs_cycle = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/x"}},
        "$defs": {
            "x": {"type": "object", "properties": {"y": {"$ref": "#/$defs/y"}}},
            "y": {"$ref": "#/$defs/x"},
        },
    }
    assert "cycle" in schema_limit_problems(defs_cycle, "s")[0]
    assert "cycle" in schema_limit_problems({"$ref": "#"}, "s")[0]
    acyclic = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/x"}, "b": {"$ref": "#/$defs/x"}},
        "$defs": {"x": {"type": "string"}},
    }
    assert schema_limit_problems(acyclic, "s") == []
    assert "inside the schema" in schema_limit_problems({"$ref": "https://example.com/s.json"}, "s")[0]
    assert "inside the schema" in schema_limit_problems({"$ref": "#/$defs/missing"}, "s")[0]


def test_other_task_text_limits() -> None:
    loc, _ = _loc({"task": {"description": "d" * 4001}})
    assert loc == ("task", "description")
    task = {"description": "Classify the review.", "labels": ["a", "b"]}
    loc, _ = _loc({"task": {**task, "label_descriptions": {"a": "x" * 501}}})
    assert loc == ("task", "label_descriptions")
    loc, _ = _loc({"task": {**task, "seed_examples": [{"input": "hi", "output": "a" * 20000}]}})
    assert loc[:2] == ("task", "seed_examples")


def test_openai_metadata_limits() -> None:
    assert _loc({"metadata": {f"k{i}": "v" for i in range(17)}})[0] == ("metadata",)
    assert _loc({"metadata": {"k" * 65: "v"}})[0] == ("metadata",)
    assert _loc({"metadata": {"k": "v" * 513}})[0] == ("metadata",)
    assert _loc({"metadata": {"k": 1}})[0] == ("metadata",)
    assert _loc({"metadata": {"k": {"nested": "v"}}})[0] == ("metadata",)
    ok = {f"k{i}": "v" * 512 for i in range(16)} | {"k" * 64: "v"}
    ok.pop("k0")
    assert JobConfig(model="m", metadata=ok).metadata == ok


def test_other_job_fields_are_bounded() -> None:
    assert _loc({"model": "m" * 257})[0] == ("model",)
    assert _loc({"training_file": "f" * 257})[0] == ("training_file",)
    assert _loc({"targets": ["x" * 65]})[0][0] == "targets"
    assert _loc({"lora": {"target_modules": ["q"] * 65}})[0][:2] == ("lora", "target_modules")
