"""Canonical forms of model output, so scorers compare what was meant rather than how it was printed.

Decoders differ in what they print: transformers skips special tokens here, llama.cpp may or may
not, and references carry LFM's `<|tool_call_start|>` markers. JSON differs in key order and in
`2` versus `2.0`. Every scorer compares these canonical forms.
"""

from __future__ import annotations

import json
import re
from typing import Any

SPECIAL_TOKEN = re.compile(r"<\|[^|<>]*\|>")  # <|im_end|>, <|tool_call_start|>, ...


def strip_special_tokens(text: str) -> str:
    """`text` without `<|...|>` markers, surrounding whitespace removed."""
    return SPECIAL_TOKEN.sub("", text).strip()


def normalize(text: str, lower: bool = True) -> str:
    """Lower-case (unless `lower=False`), special-token markers and punctuation to spaces,
    whitespace collapsed, so "Positive.<|im_end|>" == "positive". Markers go because decoders
    differ in whether they print them (transformers skips special tokens here; references may
    carry LFM tool-call markers)."""
    text = SPECIAL_TOKEN.sub(" ", text)
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower() if lower else text).split())


def _canonical_value(value: Any) -> Any:
    # 2.0 and 2 are the same JSON number; bools stay bools (True == 1 in Python, not in JSON).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical_value(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """One string per JSON value: keys sorted, integral floats written as integers, no spacing
    choices left, so equal values give equal strings (`{"b": 2.0, "a": [1]}` == `{"a":[1],"b":2}`)."""
    return json.dumps(_canonical_value(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
