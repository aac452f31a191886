"""Task spec and metadata bounds over the live API on PostgreSQL (issue 19, item 6): each is a 400
in the error shape naming the field at create and at plan (and for synthetic datasets), and
nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest

from domain.job_config import (
    MAX_DESCRIPTION_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_LABELS,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_SCHEMA_DEPTH,
    MAX_TOOLS,
)
from tests.api.test_bad_input import error_of

CLASSIFY = {"description": "Classify the sentiment of a review."}


def _tool(i: int, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    fn = {"name": f"tool_{i}", "parameters": parameters or {"type": "object", "properties": {}}}
    return {"type": "function", "function": fn}


def _nest(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


TASKS: list[tuple[str, dict[str, Any], str]] = [
    ("10k labels", {**CLASSIFY, "labels": [f"l{i}" for i in range(10_000)]}, "task.labels"),
    ("too many labels", {**CLASSIFY, "labels": [f"l{i}" for i in range(MAX_LABELS + 1)]}, "task.labels"),
    ("100 KB label", {**CLASSIFY, "labels": ["a", "b" * 100_000]}, "task.labels"),
    ("long label", {**CLASSIFY, "labels": ["a", "b" * (MAX_LABEL_LENGTH + 1)]}, "task.labels"),
    ("1000 tools", {"description": "Call a tool.", "tools": [_tool(i) for i in range(1000)]}, "task.tools"),
    (
        "too many tools",
        {"description": "Call a tool.", "tools": [_tool(i) for i in range(MAX_TOOLS + 1)]},
        "task.tools",
    ),
    (
        "deep tool schema",
        {"description": "Call a tool.", "tools": [_tool(0, _nest(MAX_SCHEMA_DEPTH))]},
        "task.tools",
    ),
    (
        "self-referential schema",
        {
            "description": "Extract fields.",
            "output_schema": {"type": "object", "properties": {"me": {"$ref": "#"}}},
        },
        "task.output_schema",
    ),
    (
        "deep output schema",
        {"description": "Extract fields.", "output_schema": _nest(MAX_SCHEMA_DEPTH)},
        "task.output_schema",
    ),
    ("long description", {"description": "d" * (MAX_DESCRIPTION_LENGTH + 1)}, "task.description"),
]

METADATA: list[tuple[str, dict[str, Any]]] = [
    ("17 keys", {f"k{i}": "v" for i in range(MAX_METADATA_KEYS + 1)}),
    ("long key", {"k" * (MAX_METADATA_KEY_LENGTH + 1): "v"}),
    ("long value", {"k": "v" * (MAX_METADATA_VALUE_LENGTH + 1)}),
    ("number value", {"k": 3}),
    ("object value", {"k": {"nested": "v"}}),
]


@pytest.fixture()
def h(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.mark.parametrize(("case", "task", "param"), TASKS, ids=[c for c, _, _ in TASKS])
def test_task_spec_bounds_are_a_400_naming_the_field(server, h, tiny_base, case, task, param) -> None:
    for path in ("/fine_tuning/jobs", "/fine_tuning/jobs/plan"):
        r = server.api.post(path, json={"model": tiny_base, "task": task}, headers=h)
        assert error_of(r, 400, param)["type"] == "invalid_request_error", case
    r = server.api.post("/synthetic_datasets", json={"task": task}, headers=h)
    error_of(r, 400, param)
    assert server.api.get("/fine_tuning/jobs", headers=h).json()["data"] == []
    assert server.api.get("/synthetic_datasets", headers=h).json()["data"] == []


@pytest.mark.parametrize(("case", "metadata"), METADATA, ids=[c for c, _ in METADATA])
def test_openai_metadata_limits_are_a_400_naming_metadata(server, h, tiny_base, case, metadata) -> None:
    body = {"model": tiny_base, "training_file": "file-x", "metadata": metadata}
    for path in ("/fine_tuning/jobs", "/fine_tuning/jobs/plan"):
        err = error_of(server.api.post(path, json=body, headers=h), 400, "metadata")
        assert "metadata" in err["message"], case
    assert server.api.get("/fine_tuning/jobs", headers=h).json()["data"] == []
