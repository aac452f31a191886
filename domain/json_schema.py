"""The subset of JSON Schema that extraction tasks use: type, properties, required, enum, items.

Written here because the `jsonschema` package is not a runtime dependency of edgetune (it reaches
the dev environment only through test tools). Keywords outside the subset (minimum, pattern,
additionalProperties, $ref, oneOf, ...) are ignored, not failed: a schema using them is checked
on the keywords above only.
"""

from __future__ import annotations

from typing import Any

from domain.canonical import canonical_json


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


JSON_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")


def schema_problems(schema: Any, path: str = "$") -> list[str]:
    """Why `schema` is not a usable schema for the subset above, each as "path: reason"; [] if it is.

    Stricter than JSON Schema itself where a lax schema would silently check nothing: a `type`
    that is not a JSON type, `required` naming a property that `properties` does not define, an
    empty `enum`. Boolean schemas (`true` / `false`) are refused, as is tuple-form `items`.
    """
    if not isinstance(schema, dict):
        return [f"{path}: a schema must be a JSON object, got {type(schema).__name__}"]
    problems: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        bad = [t for t in types if not isinstance(t, str) or t not in JSON_TYPES]
        if not types or bad:
            problems.append(
                f"{path}.type: {schema['type']!r} is not a JSON type (one of {', '.join(JSON_TYPES)})"
            )
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        problems.append(f"{path}.properties: must be an object mapping names to schemas")
        properties = {}
    for key, subschema in properties.items():
        problems += schema_problems(subschema, f"{path}.properties.{key}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        problems.append(f"{path}.required: must be a list of property names")
    elif "properties" in schema and (undefined := [r for r in required if r not in properties]):
        problems.append(f"{path}.required: {undefined!r} not defined in properties")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        problems.append(f"{path}.enum: must be a non-empty list")
    if "items" in schema:
        problems += schema_problems(schema["items"], f"{path}.items")
    return problems
