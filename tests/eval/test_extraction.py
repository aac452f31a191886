from __future__ import annotations

import pytest

from eval.extraction import field_f1, flatten_json, parse_json_object
from eval.metrics import score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  {"a": 1}<|im_end|>', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```JSON\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Here you go:\n```json\n{"a": [1, 2]}\n```\nAnything else?', {"a": [1, 2]}),
        ('```json\n{"a": 1}', {"a": 1}),  # closing fence cut by the token budget, object complete
        ('```json\n{"a": 1', None),  # object cut too
        ('Here you go: {"a": 1}', None),  # prose around an unfenced object
        ("[1, 2]", None),  # JSON, but not an object
        ('"a"', None),
        ("", None),
        ("{'a': 1}", None),  # a Python dict is not JSON
    ],
)
def test_parse_json_object(text: str, expected: dict | None) -> None:
    assert parse_json_object(text) == expected


def test_flatten_json() -> None:
    value = {"a": {"b": 1, "c": [1, {"d": None}]}, "e": {}, "f": "x"}
    assert flatten_json(value) == [
        ("a.b", "1"),
        ("a.c[]", "1"),
        ("a.c[].d", "null"),
        ("e", "{}"),
        ("f", '"x"'),
    ]


def test_field_f1_of_partially_matching_objects() -> None:
    # pred pairs: name, age, city (3); ref pairs: name, age, city, email (4). name and age match
    # (36 == 36.0), city differs. P = 2/3, R = 2/4, F1 = 2 * (1/3) / (7/6) = 4/7.
    pred = {"name": "Ada", "age": 36, "city": "London"}
    ref = {"name": "Ada", "age": 36.0, "city": "Paris", "email": "ada@example.com"}
    assert field_f1(pred, ref) == pytest.approx(4 / 7)


def test_field_f1_nested_lists_are_order_free_and_values_exact() -> None:
    ref = {"order": {"id": 7, "items": ["tea", "milk"]}}
    assert field_f1({"order": {"items": ["milk", "tea"], "id": 7}}, ref) == 1.0
    # "Tea" != "tea": 2 of 3 pairs on each side -> F1 2/3.
    assert field_f1({"order": {"id": 7, "items": ["Tea", "milk"]}}, ref) == pytest.approx(2 / 3)
    assert field_f1(None, ref) == 0.0
    assert field_f1({"other": 1}, ref) == 0.0
    assert field_f1({}, {}) == 1.0


def test_score_extraction() -> None:
    schema = {
        "type": "object",
        "required": ["name", "age"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    refs = ['{"name": "Ada", "age": 36}', '{"name": "Alan", "age": 41}', '{"name": "Grace", "age": 85}']
    preds = [
        '```json\n{"name": "Ada", "age": 36}\n```',  # F1 1, valid
        '{"name": "Alan", "age": "41"}',  # F1 1/2 (age is a string), schema-invalid
        "Grace, 85",  # not JSON: F1 0, invalid
    ]
    result = score("extraction", preds, refs, schema=schema)
    assert (result.metric, result.n) == ("field_f1", 3)
    assert result.score == pytest.approx((1 + 0.5 + 0) / 3)
    assert result.parse_rate == pytest.approx(2 / 3) == result.get("json_valid").score
    assert result.get("schema_valid").score == pytest.approx(1 / 3)
    assert "schema_valid" not in score("extraction", preds, refs).metrics


def test_score_extraction_rejects_references_that_are_not_json_objects() -> None:
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        score("extraction", ["{}", "{}"], ['{"a": 1}', "not json"])
