"""Validation of JSONL chat rows: the one rule for uploads, synthesized rows and recipe inputs.

A row is `{"messages": [...], "tools": [...]?}` in OpenAI's chat fine-tuning format. Every bad row is
reported with its 1-based line number and a reason, so a customer fixes a file in one pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROLES = {"system", "user", "assistant", "tool"}
MAX_ROW_BYTES = 64 * 1024  # one chat row; larger rows are almost always a pasting accident
MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _check_tool_calls(calls: Any, where: str) -> str | None:
    if not isinstance(calls, list) or not calls:
        return f"{where}.tool_calls must be a non-empty list"
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            return f"{where}.tool_calls[{j}].function.name is missing"
        args = fn.get("arguments", "{}")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return f"{where}.tool_calls[{j}].function.arguments is not valid JSON"
        if not isinstance(args, dict):
            return f"{where}.tool_calls[{j}].function.arguments must be a JSON object"
    return None


def _check_message(msg: Any, i: int) -> str | None:
    where = f"messages[{i}]"
    if not isinstance(msg, dict):
        return f"{where} must be an object"
    role = msg.get("role")
    if role not in ROLES:
        return f"{where}.role {role!r} is unknown (expected one of {sorted(ROLES)})"
    content = msg.get("content")
    if role == "assistant" and msg.get("tool_calls") is not None:
        if err := _check_tool_calls(msg["tool_calls"], where):
            return err
        if content is not None and not isinstance(content, str):
            return f"{where}.content must be a string"
        return None
    if not isinstance(content, str):
        return f"{where}.content must be a string"
    if not content.strip():
        return f"{where}.content is empty"
    return None


def check_row(row: Any) -> str | None:
    """Return why `row` is not a valid training row, or None when it is."""
    if not isinstance(row, dict):
        return "row must be a JSON object"
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "missing 'messages' (a non-empty list)"
    for i, msg in enumerate(messages):
        if err := _check_message(msg, i):
            return err
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn to learn from"
    tools = row.get("tools")
    if tools is not None and not isinstance(tools, list):
        return "'tools' must be a list"
    return None


def parse_rows(
    data: bytes, max_row_bytes: int, canonical: Callable[[Any], dict[str, Any] | str]
) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Every JSONL file edgetune reads: UTF-8, one JSON object per line, blank lines skipped, each
    row through `canonical` (the row as stored, or why it is refused). Returns the good rows and
    every bad line's RowError (1-based line numbers), so an upload is refused with all of them."""
    rows: list[dict[str, Any]] = []
    errors: list[RowError] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [RowError(1, f"file is not UTF-8 ({exc.reason})")]
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if (size := len(line.encode())) > max_row_bytes:
            errors.append(RowError(n, f"row is {size} bytes, over the {max_row_bytes}-byte limit"))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(RowError(n, f"bad JSON ({exc.msg} at column {exc.colno})"))
            continue
        result = canonical(row)
        if isinstance(result, str):
            errors.append(RowError(n, result))
        else:
            rows.append(result)
    return rows, errors


def parse_jsonl(
    data: bytes, max_row_bytes: int = MAX_ROW_BYTES
) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Parse and validate a chat JSONL upload; returns the good rows and every error (capped)."""
    rows, errors = parse_rows(data, max_row_bytes, lambda row: check_row(row) or row)
    return rows, errors[:MAX_REPORTED_ERRORS]


def to_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
