"""The subset of JSON Schema that extraction tasks use: type, properties, required, enum, items.

Written here because the `jsonschema` package is not a runtime dependency of edgetune (it reaches
the dev environment only through test tools). Keywords outside the subset (minimum, pattern,
additionalProperties, $ref, oneOf, ...) are ignored, not failed: a schema using them is checked
on the keywords above only.
"""

from __future__ import annotations

from typing import Any

from eval.canonical import canonical_json


def _is_type(value: Any, name: str) -> bool:
    # bool is an int in Python but not a JSON number; 1.0 is a JSON Schema integer (draft 6 on).
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    if name == "number":
        return not isinstance(value, bool) and isinstance(value, int | float)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"unknown JSON Schema type {name!r}")


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way `value` breaks `schema` (see the module docstring for the keywords checked), each
    as "path: reason"; an empty list means valid."""
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {type(value).__name__}"]
    errors = []
    # Compared as canonical JSON: in Python True == 1, in JSON Schema they differ.
    if "enum" in schema and canonical_json(value) not in {canonical_json(e) for e in schema["enum"]}:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if isinstance(value, dict):
        errors += [f"{path}: missing required {k!r}" for k in schema.get("required", []) if k not in value]
        for key, subschema in schema.get("properties", {}).items():
            if key in value:
                errors += schema_errors(value[key], subschema, f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors
