from __future__ import annotations

from typing import Any

import pytest

from domain.json_schema import schema_errors

PERSON = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "manager": {"type": ["object", "null"], "required": ["name"]},
    },
}


def test_valid_instances_have_no_errors() -> None:
    assert schema_errors({"name": "Ada", "age": 36}, PERSON) == []
    full = {"name": "Ada", "age": 36.0, "role": "admin", "tags": ["x"], "manager": None, "extra": 1}
    assert schema_errors(full, PERSON) == []  # 36.0 is an integer; undeclared keys are allowed
    assert schema_errors({"name": "Ada", "age": 1, "manager": {"name": "Bob"}}, PERSON) == []


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ([], "$: expected object, got list"),
        ({"name": "Ada"}, "$: missing required 'age'"),
        ({"name": "Ada", "age": "36"}, "$.age: expected integer, got str"),
        ({"name": "Ada", "age": True}, "$.age: expected integer, got bool"),
        ({"name": "Ada", "age": 36.5}, "$.age: expected integer, got float"),
        ({"name": "Ada", "age": 36, "role": "root"}, "$.role: 'root' is not one of ['admin', 'user']"),
        ({"name": "Ada", "age": 36, "tags": ["x", 2]}, "$.tags[1]: expected string, got int"),
        ({"name": "Ada", "age": 36, "manager": {}}, "$.manager: missing required 'name'"),
        ({"name": "Ada", "age": 36, "manager": "Bob"}, "$.manager: expected object or null, got str"),
    ],
)
def test_each_violation_is_named_with_its_path(value: Any, error: str) -> None:
    assert schema_errors(value, PERSON) == [error]


def test_enum_distinguishes_true_from_one() -> None:
    assert schema_errors(True, {"enum": [1, 2]}) != []
    assert schema_errors(1.0, {"enum": [1, 2]}) == []


def test_keywords_outside_the_subset_are_ignored() -> None:
    assert schema_errors(-5, {"type": "integer", "minimum": 0}) == []


def test_number_accepts_int_and_float_but_not_bool() -> None:
    assert schema_errors(1, {"type": "number"}) == schema_errors(1.5, {"type": "number"}) == []
    assert schema_errors(False, {"type": "number"}) == ["$: expected number, got bool"]
