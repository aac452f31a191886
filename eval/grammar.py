"""llama.cpp grammars (GBNF) that make a fine-tune's answers valid by construction on the device.

A classification, extraction or tool-calling fine-tune is trained to answer in one exact shape (the
row checks in synth/validate.py): a bare label, a JSON object valid against the task's schema, or
LFM's pythonic call list. A GBNF grammar passed to llama.cpp's sampler masks every token that would
leave that shape, so a device never sees a label outside the set, broken JSON or an unknown tool:

- classification: exactly one of the labels, as the training rows write it (the bare string);
- extraction: JSON valid against `output_schema`, converted by llama-cpp-python's own
  `json_schema_to_gbnf` (see `_json_grammar` for the one rule we tighten, and the fallback);
- tool calling: `<|tool_call_start|>[name(arg=value, ...), ...]<|tool_call_end|>` as
  recipes.chat_data.to_lfm_tool_call writes it: only the tools' names, each tool's own parameter
  names (schema order, required ones always present) and values of the parameter's JSON type as
  Python literals (`"x"`, `3`, `1.5`, `True`, `None`, lists, dicts; `enum` values only).

Special tokens. LFM2's markers `<|tool_call_start|>` / `<|tool_call_end|>` are single special
tokens. llama.cpp's grammar sampler compares each candidate token's text, and its piece cache holds
special tokens *with* their text (llama_vocab's `cache_token_to_piece`, built with special=true), so
a quoted literal `"<|tool_call_start|>"` matches the special token: measured with the pinned
llama-cpp-python 0.3.36 on the tiny LFM2 GGUF, a grammar of quoted markers lets the sampler pick
the special token when the model prefers it (tests/eval/test_grammar.py::
test_how_the_markers_are_matched). What a quoted literal cannot do is *forbid* the same text
spelled in ordinary pieces (`<`, `|`, `tool`...): a model trained on the token prefers the token,
but one pushed away from it writes the pieces, and the grammar lets it. Either spelling reads back
as the same calls (domain.tool_calls.parse_tool_calls works on the text; llama-cpp-python returns the
special token's text as nothing and the spelled-out text as it is).
This llama.cpp also has token syntax (`<|tool_call_start|>` unquoted, llama.cpp PR #17816, Dec
2025) that forces the one special token; `grammar_for(..., marker_tokens=True)` writes it. It is not
the default because (1) a llama.cpp older than that PR cannot parse the file, (2) a vocabulary
without those special tokens (SmolLM2, the offline fallback base) cannot either, and (3) an
unparseable grammar makes llama-cpp-python 0.3.36 segfault (it adds the NULL sampler llama.cpp
returns), so the portable file is the one that ships; `has_marker_tokens` tells whether a GGUF
could take the strict one, and `grammar_parses` checks a grammar against a loaded model.

What is left unconstrained: how long a string runs unless the schema sets maxLength, how long a
list runs (extraction: unless it sets maxItems), how many calls one answer holds (the training
format is one list of one or more calls), so a token budget can still cut an answer short. In tool
parameters, keywords outside type/properties/required/enum/const/items/anyOf/oneOf/$ref and
minLength/maxLength (minimum, pattern, ...) are ignored: the grammar is looser there, never
stricter. For extraction, whatever llama-cpp-python's converter leaves out; it raises on what it
cannot convert, and the grammar then falls back to the keywords edgetune's scorer checks
(domain/json_schema.py), else to any JSON object, and says so in its first line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domain.lists import EVAL_TASKS
from domain.tool_calls import TOOL_CALL_END, TOOL_CALL_START, python_literal

# What a task's grammar constrains, as the manifest records it (domain/lists.py EVAL_TASKS).
CONSTRAINS = {t: f.constrains for t, f in EVAL_TASKS.items() if f.constrains is not None}

# A quoted GBNF literal escapes these; other control characters go as \xHH.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def literal(text: str) -> str:
    """`text` as a quoted GBNF string literal (matches exactly that text)."""
    out = "".join(_ESCAPES.get(c, f"\\x{ord(c):02X}" if ord(c) < 0x20 else c) for c in text)
    return f'"{out}"'


def grammar_for(
    task_type: str,
    labels: list[str] | None,
    output_schema: dict[str, Any] | None,
    tools: list[dict[str, Any]] | None,
    *,
    marker_tokens: bool = False,
) -> str | None:
    """The GBNF grammar of a task's answers, or None when there is nothing to constrain
    (generation/chat, or a task without labels / schema / tools).

    Args:
        task_type: eval.metrics.TaskType ("classification", "extraction", "tool_calling", ...).
        labels, output_schema, tools: the task's (`TaskSpec.labels`, `.output_schema`, `.tools`;
            tools as OpenAI writes them, `{"type": "function", "function": {name, parameters}}`).
        marker_tokens: tool calling only: write the LFM markers as special tokens (llama.cpp token
            syntax) instead of quoted text; see the module docstring before turning it on.

    Write the result to a `.gbnf` file and pass it to llama.cpp with `--grammar-file`, or as text
    to `eval.runners.evaluate_model(..., grammar=...)`.
    """
    if task_type == "classification" and labels:
        return _label_grammar(labels)
    if task_type == "extraction" and output_schema is not None:
        return _json_grammar(output_schema)
    if task_type == "tool_calling" and tools:
        return _tool_call_grammar(tools, marker_tokens)
    return None


def _label_grammar(labels: list[str]) -> str | None:
    # A training row's answer is the bare label (synth/validate.py: `answer in task.labels`); after
    # it the grammar is complete and llama.cpp allows only an end-of-generation token.
    unique = list(dict.fromkeys(label for label in labels if label))
    if not unique:
        return None
    return "# edgetune: exactly one of the task's labels\nroot ::= " + " | ".join(map(literal, unique)) + "\n"


# llama-cpp-python 0.3.36's converter lets JSON strings hold raw control characters (a newline),
# which json.loads, and every strict JSON parser, rejects; llama.cpp's own converter has since
# excluded them. Tightened by replacing that one builtin rule, exactly as the converter writes it.
_LOOSE_CHAR = (
    'char ::= [^"\\\\] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
)
_STRICT_CHAR = _LOOSE_CHAR.replace('[^"\\\\]', '[^"\\\\\\x00-\\x1F]', 1)


def _json_grammar(schema: dict[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    # The converter asserts on what it cannot take (a pattern without ^...$, a remote $ref): then
    # the keywords edgetune's scorer checks (domain/json_schema.py), then any JSON object.
    attempts = [
        (schema, "a JSON object valid against the task's output_schema"),
        (
            _scored_subset(schema),
            "a JSON object valid against the output_schema's type/properties/required/enum/items",
        ),
        ({"type": "object"}, "any JSON object"),
    ]
    failure = ""  # why the full schema was refused
    for candidate, what in attempts:
        try:
            text = json_schema_to_gbnf(json.dumps(candidate))
        except Exception as e:  # AssertionError mostly; KeyError/ValueError on odd input
            failure = failure or f"{type(e).__name__}: {e}"[:200].replace("\n", " ")
            continue
        header = f"# edgetune: {what}" + (
            f" (the converter refused the full schema: {failure})" if candidate is not schema else ""
        )
        lines = [_STRICT_CHAR if line == _LOOSE_CHAR else line for line in text.splitlines()]
        return "\n".join([header, *lines]) + "\n"
    raise AssertionError("llama-cpp-python cannot convert even {'type': 'object'}")


# What domain/json_schema.py checks, plus what resolves a local $ref.
_SCORED_KEYWORDS = ("type", "properties", "required", "enum", "items", "$ref", "$defs", "definitions")


def _scored_subset(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_scored_subset(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kept = {k: v for k, v in schema.items() if k in _SCORED_KEYWORDS}
    for key in ("properties", "$defs", "definitions"):
        if isinstance(kept.get(key), dict):
            kept[key] = {name: _scored_subset(sub) for name, sub in kept[key].items()}
    if "items" in kept:
        kept["items"] = _scored_subset(kept["items"])
    return kept


# Python literals as recipes.chat_data.python_literal writes them: strings through json.dumps
# (its escapes are Python's too; a raw control character would be a SyntaxError), repr() numbers
# (integers up to 16 digits, as llama.cpp's JSON grammar bounds them), True/False/None.
_PRIMITIVES = {
    "py-char": r'[^"\\\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4})',
    "py-string": r'"\"" py-char* "\""',
    "py-int": r'"-"? ([0-9] | [1-9] [0-9]{0,15})',
    "py-number": r'py-int ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?',
    "py-bool": '"True" | "False"',
    "py-none": '"None"',
    "py-value": "py-string | py-number | py-bool | py-none | py-list | py-dict",
    "py-list": '"[" (py-value (", " py-value)*)? "]"',
    "py-dict": '"{" (py-string ": " py-value (", " py-string ": " py-value)*)? "}"',
}
_TYPE_RULES = {"integer": "py-int", "number": "py-number", "boolean": "py-bool", "null": "py-none"}
# Deeper than any schema the API accepts (domain/job_config.py MAX_SCHEMA_DEPTH is 16): a guard for
# direct callers, below which any value is allowed.
_MAX_DEPTH = 32


class _Rules:
    """Named GBNF rules; an identical body gets one name, so a shared sub-schema is one rule."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # body -> name

    def add(self, body: str) -> str:
        if body not in self.names:
            self.names[body] = f"r{len(self.names)}"
        return self.names[body]

    def text(self) -> str:
        named = [f"{name} ::= {body}" for body, name in self.names.items()]
        return "\n".join([*named, *(f"{k} ::= {v}" for k, v in _PRIMITIVES.items())]) + "\n"


def _tool_call_grammar(tools: list[dict[str, Any]], marker_tokens: bool) -> str:
    rules = _Rules()
    calls = []
    for tool in tools:
        fn = tool.get("function", tool)
        params = fn.get("parameters") or {}
        kwargs = _object_items(rules, params, params, 0, lambda key: literal(f"{key}="))
        calls.append(" ".join(part for part in (literal(fn["name"] + "("), kwargs, literal(")")) if part))
    call = rules.add(" | ".join(calls))
    start, end = (
        (TOOL_CALL_START, TOOL_CALL_END) if marker_tokens else map(literal, (TOOL_CALL_START, TOOL_CALL_END))
    )
    root = f'root ::= {start} "[" {call} (", " {call})* "]" {end}'
    return "# edgetune: LFM tool calls to the task's tools\n" + root + "\n" + rules.text()


def _object_items(rules: _Rules, schema: dict[str, Any], root: dict[str, Any], depth: int, key: Any) -> str:
    """The `key value` items of an object's declared properties, in schema order, ", "-separated,
    each required one present: a tool's keyword arguments, or a dict argument's entries."""
    required = set(schema.get("required") or [])
    items = [
        (f"{key(name)} {_value(rules, sub, root, depth + 1)}", name in required)
        for name, sub in (schema.get("properties") or {}).items()
    ]
    return _ordered(rules, items)


def _ordered(rules: _Rules, items: list[tuple[str, bool]]) -> str:
    """Items in order, the optional ones skippable, joined by ", " (none before the first present
    one). Built from the end as rules, so the grammar grows linearly with the number of items:
    `rest` follows an item already written, `start` is where nothing has been written yet."""
    start = rest = ""
    for expr, required in reversed(items):
        tail = f"{expr} {rest}".strip()
        if required:
            start = rules.add(tail)
        else:
            start = rules.add(f"{tail} | {start}" if start else f"({tail})?")
        rest = rules.add(f'", " {expr} {rest}'.strip() if required else f'(", " {expr})? {rest}'.strip())
    return start


def _value(rules: _Rules, schema: Any, root: dict[str, Any], depth: int) -> str:
    """A rule expression for one value of `schema`, written as a Python literal."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return "py-value"
    for key in ("enum", "const"):
        values = schema.get(key) if key == "enum" else [schema[key]] if key in schema else None
        if isinstance(values, list) and values:
            return "(" + " | ".join(literal(python_literal(v)) for v in values) + ")"
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return "(" + " | ".join(_value(rules, s, root, depth + 1) for s in schema[key]) + ")"
    types = schema.get("type") or _implied_type(schema)
    alternatives = [
        _typed(rules, t, schema, root, depth) for t in (types if isinstance(types, list) else [types])
    ]
    return alternatives[0] if len(alternatives) == 1 else "(" + " | ".join(alternatives) + ")"


def _implied_type(schema: dict[str, Any]) -> str | None:
    if "properties" in schema:
        return "object"
    return "array" if "items" in schema else None


def _typed(rules: _Rules, kind: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> str:
    if kind in _TYPE_RULES:
        return _TYPE_RULES[kind]
    if kind == "string":
        return _string(schema)
    if kind == "array":
        item = _value(rules, schema.get("items", {}), root, depth + 1)
        return rules.add(f'"[" ({item} (", " {item})*)? "]"')
    if kind == "object" and schema.get("properties"):
        entries = _object_items(rules, schema, root, depth, lambda key: literal(python_literal(key) + ": "))
        return rules.add(f'"{{" {entries} "}}"')
    return "py-dict" if kind == "object" else "py-value"


def _string(schema: dict[str, Any]) -> str:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if not isinstance(low, int) and not isinstance(high, int):
        return "py-string"
    low = low if isinstance(low, int) and low >= 0 else 0
    high_text = str(high) if isinstance(high, int) and high >= low else ""
    return f'("\\"" py-char{{{low},{high_text}}} "\\"")'


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    """A local `$ref` ("#/$defs/x") followed within `root`; the API refuses others and cycles
    (domain/job_config.py), and an unresolvable one allows any value."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < _MAX_DEPTH:
        node: Any = root
        for part in schema["$ref"].removeprefix("#").strip("/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) and part else node
        schema, seen = node, seen + 1
    return schema


def grammar_parses(llm: Any, grammar: str) -> bool:
    """Whether llama.cpp parses `grammar` against this loaded model's vocabulary. Check before
    passing a grammar to llama-cpp-python: given one that does not parse, 0.3.36 adds the NULL
    sampler llama.cpp returns and the process segfaults."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def has_marker_tokens(gguf_path: Path) -> bool:
    """Whether the GGUF's vocabulary has LFM's tool-call markers as single tokens, so that
    `grammar_for(..., marker_tokens=True)` parses for it (LFM2: yes; SmolLM2: no)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    try:
        return all(
            len(llm.tokenize(m.encode(), add_bos=False, special=True)) == 1
            for m in (TOOL_CALL_START, TOOL_CALL_END)
        )
    finally:
        llm.close()
