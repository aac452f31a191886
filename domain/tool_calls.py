"""Parse tool calls out of model text and compare them, for tool-calling evals and runtime parity.

LFM2 writes tool calls as a Python list of keyword calls between special tokens:

    <|tool_call_start|>[get_weather(city="Boston", days=3), get_time(tz="EST")]<|tool_call_end|>

The list is read with `ast.parse` and each argument with `ast.literal_eval`, which accept Python
literals only: model output is never executed. Decoders that skip special tokens (transformers'
`skip_special_tokens=True`, llama.cpp by default) print the bare list, so the markers are optional.
References may also be OpenAI `tool_calls` (JSON arguments), the training data's own format.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from typing import Any, NamedTuple

from domain.canonical import canonical_json, strip_special_tokens

# Everything between a start marker and its end marker, or the end of the text when the token
# budget cut the end marker off (the list is then usually cut too, and fails to parse).
# LFM's tool-call markers (single special tokens in LFM2's vocabulary). The format's one home:
# recipes.chat_data writes rows in it, this module parses it, eval.grammar constrains it.
TOOL_CALL_START = "<|tool_call_start|>"
TOOL_CALL_END = "<|tool_call_end|>"
_CALL_BLOCK = re.compile(r"<\|tool_call_start\|>(.*?)(?:<\|tool_call_end\|>|$)", re.DOTALL)
_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)


class ToolCall(NamedTuple):
    name: str
    arguments: dict[str, Any]


def _json_value(value: Any) -> Any:
    """A literal as JSON would hold it (tuples become lists); ValueError for sets, bytes, complex
    numbers and non-string keys, which no OpenAI tool schema can describe."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(v) for k, v in value.items()}
    raise ValueError(f"not a JSON value: {type(value).__name__}")


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = _dotted_name(node.value)
        return None if owner is None else f"{owner}.{node.attr}"
    return None


def _call_from_node(node: ast.expr) -> ToolCall | None:
    # Positional arguments cannot be matched to a schema's parameter names, **kwargs hides them, and
    # a repeated keyword (which ast.parse accepts; only the compiler rejects it) has no one value.
    if not isinstance(node, ast.Call) or node.args or any(kw.arg is None for kw in node.keywords):
        return None
    if len({kw.arg for kw in node.keywords}) < len(node.keywords):
        return None
    name = _dotted_name(node.func)
    if name is None:
        return None
    try:
        arguments = {str(kw.arg): _json_value(ast.literal_eval(kw.value)) for kw in node.keywords}
    except _LITERAL_ERRORS:
        return None
    return ToolCall(name, arguments)


def _parse_call_list(source: str) -> list[ToolCall] | None:
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except _LITERAL_ERRORS:  # SyntaxError mostly; ValueError for NUL bytes; deep nesting recurses
        return None
    if not isinstance(tree.body, ast.List):
        return None
    calls = [_call_from_node(node) for node in tree.body.elts]
    return None if any(c is None for c in calls) else [c for c in calls if c is not None]


def parse_tool_calls(text: str) -> list[ToolCall] | None:
    """The tool calls in LFM model output, in order, or None when the call text is malformed.

    Text with no start marker that does not begin with "[" is a plain answer: no calls, `[]`.
    Text that does hold calls (markers, or a bare `[...]` list) must parse completely, every item
    a call with keyword arguments only, else None: a runtime would fail on it too.
    """
    blocks = _CALL_BLOCK.findall(text)
    if not blocks:
        bare = strip_special_tokens(text)
        if not bare.startswith("["):
            return []
        blocks = [bare]
    calls: list[ToolCall] = []
    for block in blocks:
        parsed = _parse_call_list(block)
        if parsed is None:
            return None
        calls += parsed
    return calls


def parse_openai_tool_calls(tool_calls: list[Any]) -> list[ToolCall] | None:
    """OpenAI `tool_calls` (`[{"type": "function", "function": {"name", "arguments"}}]`, arguments
    a JSON string or an object) as ToolCalls, or None when one is malformed."""
    calls = []
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return None
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append(ToolCall(function["name"], arguments))
    return calls


def parse_reference_calls(reference: str | list[Any]) -> list[ToolCall] | None:
    """The calls a reference expects: OpenAI `tool_calls` (a list, or its JSON text, or JSON
    `{"tool_calls": [...]}`), else LFM call text as in `parse_tool_calls`."""
    if isinstance(reference, list):
        return parse_openai_tool_calls(reference)
    try:
        value = json.loads(reference)
    except ValueError:
        return parse_tool_calls(reference)
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        return parse_openai_tool_calls(value["tool_calls"])
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return parse_openai_tool_calls(value)
    return parse_tool_calls(reference)


def calls_match(pred: list[ToolCall], ref: list[ToolCall], arguments: bool = True) -> bool:
    """Same calls, in any order (parallel calls have none): names as a multiset, and with
    `arguments` each call's arguments too, compared as canonical JSON (so 2 == 2.0, True != 1)."""
    if not arguments:
        return Counter(c.name for c in pred) == Counter(c.name for c in ref)
    return Counter(canonical_json([c.name, c.arguments]) for c in pred) == Counter(
        canonical_json([c.name, c.arguments]) for c in ref
    )


def python_literal(value: Any) -> str:
    """A JSON value as Python source: strings double-quoted, True/False/None."""
    if value is None:
        return "None"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "True" if value else "False"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes (\" \\ \n \uXXXX) are valid Python escapes too.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k), ensure_ascii=False)}: {python_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"not a JSON value: {value!r}")
