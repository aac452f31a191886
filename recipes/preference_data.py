"""Preference rows for DPO: two accepted JSONL formats in, one canonical row out, every bad line named.

One row per line, in either format:

TRL's preference format, conversational or as plain strings (optional top-level `tools`):

    {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
     "rejected": [{"role": "assistant", "content": "Go away."}]}
    {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}

OpenAI's DPO fine-tuning format:

    {"input": {"messages": [{"role": "user", "content": "Hi"}], "tools": [...]},
     "preferred_output": [{"role": "assistant", "content": "Hello!"}],
     "non_preferred_output": [{"role": "assistant", "content": "Go away."}]}

Both become the canonical conversational row `{"prompt": [...], "chosen": [...], "rejected": [...],
"tools": [...]?}`. A plain-string prompt becomes one user turn and a plain-string answer one
assistant turn, so every row is rendered by the model's chat template, as it will be at inference.
Messages obey domain.chat_rows' rules (the one rule for chat rows), and tool calls become LFM text the
same way SFT rows do (recipes.chat_data.normalize_row).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from domain.chat_rows import MAX_ROW_BYTES, RowError, check_row, parse_rows
from recipes.chat_data import normalize_row

# A preference row carries its prompt once and two answers: twice a chat row's byte limit.
MAX_PREFERENCE_ROW_BYTES = 2 * MAX_ROW_BYTES
TRL_KEYS = ("prompt", "chosen", "rejected")
OPENAI_KEYS = ("input", "preferred_output", "non_preferred_output")
MAX_LISTED_ERRORS = 20  # in a ValueError's message; parse_preference_jsonl returns them all
_MESSAGE_INDEX = re.compile(r"^messages\[(\d+)\]")


def _missing(row: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    absent = [k for k in keys if row.get(k) is None]
    return "missing " + ", ".join(repr(k) for k in absent) if absent else None


def _split(row: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str, str]] | str:
    """The row's prompt/chosen/rejected/tools, and what the row itself calls them; or why not."""
    if any(k in row for k in OPENAI_KEYS):
        if err := _missing(row, OPENAI_KEYS):
            return err
        given = row["input"]
        if not isinstance(given, dict) or given.get("messages") is None:
            return "missing 'input.messages' (a non-empty list)"
        parts = {
            "prompt": given["messages"],
            "chosen": row["preferred_output"],
            "rejected": row["non_preferred_output"],
            "tools": given.get("tools"),
        }
        return parts, ("input.messages", "preferred_output", "non_preferred_output")
    if not any(k in row for k in TRL_KEYS):
        return (
            "missing 'prompt', 'chosen' and 'rejected' (TRL's preference format) or 'input', "
            "'preferred_output' and 'non_preferred_output' (OpenAI's DPO format)"
        )
    if err := _missing(row, TRL_KEYS):
        return err
    return {k: row.get(k) for k in (*TRL_KEYS, "tools")}, TRL_KEYS


def _as_messages(value: Any, role: str, name: str) -> list[Any] | str:
    """A plain string as one `role` turn, a list as is; or why the value is neither."""
    if isinstance(value, str):
        return [{"role": role, "content": value}] if value.strip() else f"{name!r} is empty"
    if isinstance(value, list) and value:
        return value
    return f"{name!r} must be a string or a non-empty list of messages"


def _check_answer(answer: list[Any], name: str) -> str | None:
    for i, msg in enumerate(answer):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role != "assistant":
            return f"{name}[{i}].role must be 'assistant', got {role!r}"
    return None


def _check_turns(prompt: list[Any], answer: list[Any], tools: Any, names: tuple[str, str]) -> str | None:
    """Run chat_rows' message rules over prompt + answer; name the failing message as the row does."""
    reason = check_row({"messages": [*prompt, *answer], "tools": tools})
    if reason is None:
        return None
    match = _MESSAGE_INDEX.match(reason)
    if match is None:
        return reason
    i = int(match.group(1))
    where = f"{names[0]}[{i}]" if i < len(prompt) else f"{names[1]}[{i - len(prompt)}]"
    return where + reason[match.end() :]


def canonical_row(row: Any) -> dict[str, Any] | str:
    """The canonical conversational row for `row`, or the reason it is not a valid preference."""
    if not isinstance(row, dict):
        return "row must be a JSON object"
    split = _split(row)
    if isinstance(split, str):
        return split
    parts, names = split
    prompt = _as_messages(parts["prompt"], "user", names[0])
    chosen = _as_messages(parts["chosen"], "assistant", names[1])
    rejected = _as_messages(parts["rejected"], "assistant", names[2])
    for value in (prompt, chosen, rejected):
        if isinstance(value, str):
            return value
    assert isinstance(prompt, list) and isinstance(chosen, list) and isinstance(rejected, list)
    tools = parts["tools"]
    for answer, name in ((chosen, names[1]), (rejected, names[2])):
        if err := _check_answer(answer, name) or _check_turns(prompt, answer, tools, (names[0], name)):
            return err
    # The answers under comparison are the assistant's reply to the prompt's last turn.
    if prompt[-1]["role"] not in ("user", "tool"):
        return f"{names[0]} must end with a user or tool turn, not {prompt[-1]['role']!r}"
    out = {
        "prompt": normalize_row({"messages": prompt})["messages"],
        "chosen": normalize_row({"messages": chosen})["messages"],
        "rejected": normalize_row({"messages": rejected})["messages"],
    }
    if out["chosen"] == out["rejected"]:
        return f"{names[1]!r} and {names[2]!r} are identical: a preference needs two different answers"
    return out | ({"tools": tools} if tools else {})


def as_chat_row(pair: dict[str, Any], side: str = "chosen") -> dict[str, Any]:
    """A canonical pair as the chat row of its prompt and one answer ("chosen" or "rejected"): what
    the tokenizer counts, and what eval scores a preference-tuned model against (the chosen side)."""
    tools = {"tools": pair["tools"]} if pair.get("tools") else {}
    return {"messages": [*pair["prompt"], *pair[side]], **tools}


def parse_preference_jsonl(
    data: bytes, max_row_bytes: int = MAX_PREFERENCE_ROW_BYTES
) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Parse and validate a preference JSONL file: canonical rows and EVERY bad line with its reason
    (domain/chat_rows.py parse_rows reads every JSONL file the same way)."""
    return parse_rows(data, max_row_bytes, canonical_row)


def load_preference_rows(jsonl_path: Path) -> list[dict[str, Any]]:
    """Read a preference file; raises ValueError naming every bad line (the first 20 in full)."""
    rows, errors = parse_preference_jsonl(Path(jsonl_path).read_bytes())
    if errors:
        listed = "\n".join(f"  {e}" for e in errors[:MAX_LISTED_ERRORS])
        hidden = len(errors) - MAX_LISTED_ERRORS
        more = f"\n  ... and {hidden} more" if hidden > 0 else ""
        raise ValueError(f"{jsonl_path}: {len(errors)} invalid preference row(s):\n{listed}{more}")
    if not rows:
        raise ValueError(f"{jsonl_path}: no rows")
    return rows
