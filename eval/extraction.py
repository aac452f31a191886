"""Structured extraction: is the answer a JSON object, and how many of its fields are right.

Field-level F1 flattens both objects to `path=value` pairs and scores the overlap, so an answer
with 4 of 5 fields right earns 0.89 where exact match would give it nothing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from domain.canonical import canonical_json, strip_special_tokens

# ```json ... ``` (or a bare ```) around the object; the closing fence may be cut off by the token
# budget, and then the object usually is too, which json.loads will catch.
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object `text` holds, or None. A ```json fence around it is allowed; prose around
    an unfenced object is not (the task asked for JSON, and a runtime's json.loads would fail)."""
    text = strip_special_tokens(text)
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def flatten_json(value: Any, path: str = "") -> list[tuple[str, str]]:
    """`(path, canonical value)` for every leaf: `{"a": {"b": 1}}` -> `[("a.b", "1")]`.

    List items share their list's path plus "[]" (`{"tags": ["x", "y"]}` -> `("tags[]", '"x"')`,
    `("tags[]", '"y"')`): extracted lists (entities, line items) rarely have a meaningful order, so
    order is not scored. Empty objects and lists are leaves themselves, so `{}` vs `{}` still matches.
    """
    if isinstance(value, dict) and value:
        return [pair for k, v in value.items() for pair in flatten_json(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list) and value:
        return [pair for v in value for pair in flatten_json(v, f"{path}[]")]
    return [(path, canonical_json(value))]


def field_f1(pred: dict[str, Any] | None, ref: dict[str, Any]) -> float:
    """F1 over `path=value` pairs (as multisets): P = matched / pred pairs, R = matched / ref pairs.

    Values must match exactly after canonical JSON (so 2 == 2.0, but "Boston" != "boston"). An
    answer that is not a JSON object (None) scores 0.
    """
    if pred is None:
        return 0.0
    pred_pairs, ref_pairs = Counter(flatten_json(pred)), Counter(flatten_json(ref))
    matched = (pred_pairs & ref_pairs).total()
    if matched == 0:
        return 0.0
    precision, recall = matched / pred_pairs.total(), matched / ref_pairs.total()
    return 2 * precision * recall / (precision + recall)
