"""Chat rows in, training-ready rows out: tool-call normalisation and the chat templates.

OpenAI-format rows carry tool calls as structured `tool_calls` with JSON-string arguments. LFM2
emits tool calls as text, a Python-call list between special tokens:

    <|tool_call_start|>[get_weather(location="Boston", days=3)]<|tool_call_end|>

so every row is rewritten to that text before training. The model then learns exactly the string
that llama.cpp / LEAP runtimes parse back into a tool call, on every base (SmolLM2 included).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from domain.chat_rows import parse_jsonl
from domain.tool_calls import TOOL_CALL_END, TOOL_CALL_START, python_literal

TEMPLATES_DIR = Path(__file__).with_name("chat_templates")
_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def _format_call(call: dict[str, Any]) -> str:
    function = call["function"]
    args = function.get("arguments") or {}
    if isinstance(args, str):
        args = json.loads(args) if args.strip() else {}
    rendered = ", ".join(f"{name}={python_literal(value)}" for name, value in args.items())
    return f"{function['name']}({rendered})"


def to_lfm_tool_call(tool_calls: list[dict[str, Any]]) -> str:
    """OpenAI `tool_calls` -> `<|tool_call_start|>[f(a="x"), g(b=1)]<|tool_call_end|>`."""
    return TOOL_CALL_START + "[" + ", ".join(_format_call(c) for c in tool_calls) + "]" + TOOL_CALL_END


def normalize_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of `row` whose messages are plain {role, content} with tool calls as LFM text.

    The templates read only role and content; other message keys (`tool_call_id`, `name`) are
    dropped so every message has the same shape (datasets stores them as one Arrow struct).
    `tools` is kept as given.
    """
    messages = []
    for msg in row["messages"]:
        content = msg.get("content") or ""
        if msg["role"] == "assistant" and msg.get("tool_calls"):
            # LFM2 puts the call first; any accompanying text follows it.
            content = to_lfm_tool_call(msg["tool_calls"]) + content
        messages.append({"role": msg["role"], "content": content})
    out: dict[str, Any] = {"messages": messages}
    if row.get("tools"):
        out["tools"] = copy.deepcopy(row["tools"])
    return out


def load_rows(jsonl_path: Path, normalize: bool = True) -> list[dict[str, Any]]:
    """Read and validate a JSONL chat file; raises ValueError listing every bad line."""
    rows, errors = parse_jsonl(Path(jsonl_path).read_bytes())
    if errors:
        listed = "\n".join(f"  {e}" for e in errors)
        raise ValueError(f"{jsonl_path}: {len(errors)} invalid row(s):\n{listed}")
    if not rows:
        raise ValueError(f"{jsonl_path}: no rows")
    return [normalize_row(r) for r in rows] if normalize else rows


def model_type(model_dir: Path) -> str:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return str(config.get("model_type", ""))


def training_template(model_dir: Path) -> str:
    """The chat template with {% generation %} markers for this checkpoint's architecture."""
    name = "lfm2.jinja" if model_type(model_dir).startswith("lfm2") else "chatml.jinja"
    return (TEMPLATES_DIR / name).read_text()


def inference_template(template: str) -> str:
    """`template` without {% generation %} tags, which only transformers' renderer understands.

    The tags wrap output without emitting anything, so the rendered text is unchanged.
    """
    return _GENERATION_TAG.sub("", template)
