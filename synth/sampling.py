"""Structured answers sampled from a JSON Schema, so they are valid by construction.

For extraction and tool calling the answer (a JSON object, a tool call's arguments) is drawn here
first and the teacher only writes the text that states it, the same move as classification, where
the label is chosen before the teacher writes an input. A small teacher cannot be trusted to emit
schema-valid JSON; it can usually be trusted to mention "Boston" when asked to.

Free-text string fields take their values from per-field pools the teacher lists once per run
(`synth.topics.value_pools`), falling back to small built-in lists chosen by the field's name.
Numbers, booleans, enums and formatted strings (date, time, email) are sampled here directly.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from synth.filters import normalize

FIRST_NAMES = ["Maria", "James", "Aisha", "Chen", "Lucas", "Priya", "Omar", "Sofia", "Kenji", "Emma"]
LAST_NAMES = ["Lopez", "Smith", "Khan", "Wang", "Martin", "Patel", "Haddad", "Rossi", "Tanaka", "Brown"]
CITIES = ["Boston", "Madrid", "Tokyo", "Cairo", "Berlin", "Toronto", "Mumbai", "Lyon", "Seoul", "Austin"]
# By a word in the field's name: what a value of it usually looks like.
FALLBACKS = {
    "city": CITIES,
    "location": CITIES,
    "destination": CITIES,
    "country": ["Spain", "Japan", "Canada", "Brazil", "Kenya", "Norway", "India", "Mexico"],
    "name": [f"{a} {b}" for a, b in zip(FIRST_NAMES, LAST_NAMES, strict=True)],
    "company": ["Acme Corp", "Northwind", "Globex", "Initech", "Umbrella Foods", "Blue Harbor"],
    "product": ["coffee maker", "running shoes", "laptop stand", "desk lamp", "phone case", "backpack"],
    "currency": ["USD", "EUR", "JPY", "GBP", "CAD", "INR"],
    "language": ["English", "Spanish", "French", "German", "Japanese", "Hindi"],
    "color": ["red", "blue", "green", "black", "white", "yellow"],
}
GENERIC = ["blue notebook", "morning meeting", "spare key", "garden hose", "weekly report", "train ticket"]


def string_fields(schema: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    """(path, description) of every free-text string in `schema`: no enum, const or format.

    Paths name object keys with dots and list items with "[]" (`order.items[].name`); sampling
    looks pools up by the same paths.
    """
    kind = _type(schema)
    if "enum" in schema or "const" in schema:
        return []
    if kind == "object":
        return [
            field
            for key, sub in schema.get("properties", {}).items()
            for field in string_fields(sub, f"{path}.{key}" if path else key)
        ]
    if kind == "array" and isinstance(schema.get("items"), dict):
        return string_fields(schema["items"], f"{path}[]")
    if kind == "string" and "format" not in schema:
        return [(path, str(schema.get("description") or ""))]
    return []


def sample(schema: dict[str, Any], rng: random.Random, pools: dict[str, list[str]], path: str = "") -> Any:
    """A value valid against `schema` (for the keywords domain.json_schema checks)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = _type(schema)
    if kind == "object":
        return _sample_object(schema, rng, pools, path)
    if kind == "array":
        items = schema["items"] if isinstance(schema.get("items"), dict) else {"type": "string"}
        n = rng.randint(max(1, schema.get("minItems", 1)), max(1, min(3, schema.get("maxItems", 3))))
        return [sample(items, rng, pools, f"{path}[]") for _ in range(n)]
    if kind == "integer":
        low, high = _bounds(schema, 1, 20)
        return rng.randint(int(low), int(high))
    if kind == "number":
        low, high = _bounds(schema, 1, 100)
        return round(rng.uniform(low, high), 1)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _sample_string(schema, rng, pools, path)


def _type(schema: dict[str, Any]) -> str:
    """The schema's type; of a list, the first that is not null; no type at all reads as string."""
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return str(kind)


def _sample_object(
    schema: dict[str, Any], rng: random.Random, pools: dict[str, list[str]], path: str
) -> dict[str, Any]:
    # Required fields always; each optional one half the time, and at least one field overall,
    # so the rows teach both "field present" and "field absent".
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    keys = [k for k in properties if k in required or rng.random() < 0.5]
    if not keys and properties:
        keys = [rng.choice(list(properties))]
    return {k: sample(properties[k], rng, pools, f"{path}.{k}" if path else k) for k in keys}


def _bounds(schema: dict[str, Any], low: float, high: float) -> tuple[float, float]:
    low = schema.get("minimum", schema.get("exclusiveMinimum", low - 1) + 1)
    high = schema.get("maximum", schema.get("exclusiveMaximum", high + 1) - 1)
    return low, max(low, high)


def _sample_string(schema: dict[str, Any], rng: random.Random, pools: dict[str, list[str]], path: str) -> str:
    fmt = schema.get("format")
    if fmt in ("date", "date-time"):
        day = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(730))
        return day.isoformat() if fmt == "date" else f"{day.isoformat()}T{rng.randrange(8, 19):02d}:00:00"
    if fmt == "time":
        return f"{rng.randrange(7, 22):02d}:{rng.choice(['00', '15', '30', '45'])}"
    if fmt == "email":
        return f"{rng.choice(FIRST_NAMES).lower()}.{rng.choice(LAST_NAMES).lower()}@example.com"
    if pools.get(path):
        return rng.choice(pools[path])
    return rng.choice(fallback_values(path))


def fallback_values(path: str) -> list[str]:
    """Built-in values for a field the teacher listed none for, by the words of its name."""
    words = normalize(path.replace("_", " ").replace(".", " ").replace("[]", " ")).split()
    for word in reversed(words):  # "customer.name" is a name, "name_of_city" ... a city: last word wins
        for key, values in FALLBACKS.items():
            if word == key or word.rstrip("s") == key:
                return values
    return GENERIC


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every scalar in a JSON value, in order."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v, f"{path}[]")]
    return [(path, value)]


def field_words(path: str) -> str:
    """A field's own name in words: `get_weather.city` -> "city", `items[].unit_price` -> "unit price"."""
    return path.split(".")[-1].replace("[]", "").replace("_", " ")


def mention_text(value: dict[str, Any]) -> str:
    """The facts to state, as the teacher is told them: `city: Boston, days: 3, urgent: yes`."""
    parts = []
    for path, v in leaves(value):
        shown = ("yes" if v else "no") if isinstance(v, bool) else "none" if v is None else str(v)
        parts.append(f"{field_words(path)}: {shown}")
    return ", ".join(parts)


def missing_from(text: str, value: Any) -> list[str]:
    """The strings and numbers of `value` that `text` does not mention (word-normalised, so
    "maria lopez," matches "Maria Lopez"). Booleans and nulls cannot be checked by matching and
    are left to the teacher."""
    words = f" {normalize(text)} "
    missing = []
    for _, v in leaves(value):
        if isinstance(v, bool) or v is None:
            continue
        shown = f"{v:g}" if isinstance(v, float) else str(v)
        if f" {normalize(shown)} " not in words:
            missing.append(shown)
    return missing
