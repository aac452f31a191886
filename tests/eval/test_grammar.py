"""Grammars from a task's labels, schema and tools, run in llama.cpp on real GGUFs: SmolLM2-135M
(the bundled real pretrained model, a Q4_1 GGUF used as shipped) for what a grammar guarantees, and
the tiny random LFM2 (whose vocabulary has LFM's tool-call markers as special tokens) for how the
markers are matched. Assertions are on shares and bounds, never on exact text."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.json_schema import schema_errors
from domain.tool_calls import TOOL_CALL_END, TOOL_CALL_START, parse_tool_calls
from eval.grammar import grammar_for, grammar_parses, has_marker_tokens
from eval.runners import evaluate_model, generate_gguf
from eval.runtime_stats import RuntimeStats
from synth.llama_server import bundled_teacher_gguf

LABELS = ["positive", "negative", "neutral"]
SCHEMA = {
    "type": "object",
    "properties": {
        "product": {"type": "string", "maxLength": 12},
        "rating": {"type": "integer"},
        "in_stock": {"type": "boolean"},
    },
    "required": ["product", "rating"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"tz": {"type": "string", "maxLength": 6}},
                "required": ["tz"],
            },
        },
    },
]
TEXTS = ["great product, love it", "terrible battery", "the screen is a screen"]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return bundled_teacher_gguf()


@pytest.fixture(scope="module")
def smollm2_vocab(smollm2: Path) -> Iterator[Any]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(smollm2), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def _rows(system: str, texts: list[str], answer: str, tools: list[dict] | None = None) -> list[dict]:
    rows = []
    for text in texts:
        messages = [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        row: dict[str, Any] = {
            "messages": [{"role": "system", "content": system}, *messages] if system else messages
        }
        if tools:
            row["tools"] = tools
        rows.append(row)
    return rows


def _is_schema_json(out: str) -> bool:
    try:
        value = json.loads(out)  # strict: raw control characters in strings fail here
    except ValueError:
        return False
    return isinstance(value, dict) and not schema_errors(value, SCHEMA)


def _is_known_call(out: str) -> bool:
    calls = parse_tool_calls(out)
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    return bool(calls) and all(
        c.name in tools and not schema_errors(c.arguments, tools[c.name]) for c in calls
    )


def test_nothing_to_constrain_gives_no_grammar() -> None:
    assert grammar_for("generation", None, None, None) is None
    assert grammar_for("classification", [], None, None) is None
    assert grammar_for("classification", [""], None, None) is None
    assert grammar_for("extraction", None, None, None) is None
    assert grammar_for("tool_calling", None, None, []) is None


def test_llama_cpp_parses_every_grammar_the_api_can_ask_for(smollm2_vocab: Any) -> None:
    """Labels with quotes, backslashes, newlines and non-ASCII; schemas with $ref, enums, nested
    objects and lists; tools with every JSON type, a dotted name and no parameters."""
    labels = ['say "hi"', "back\\slash", "two\nlines", "très bien", "tab\there"]
    schema = {
        "type": "object",
        "$defs": {"money": {"type": "object", "properties": {"amount": {"type": "number"}}}},
        "properties": {
            "total": {"$ref": "#/$defs/money"},
            "items": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
            "note": {"type": ["string", "null"]},
        },
        "required": ["total"],
    }
    every_type = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "minLength": 1},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "z": {"type": "null"},
            "l": {"type": "array", "items": {"type": "integer"}},
            "d": {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]},
            "free": {"type": "object"},
            "any": {},
            "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "ref": {"$ref": "#/properties/i"},
        },
        "required": ["i", "d"],
    }
    tools = [
        {"type": "function", "function": {"name": "ns.search", "parameters": every_type}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
        *TOOLS,
    ]
    grammars = [
        grammar_for("classification", labels, None, None),
        grammar_for("extraction", None, schema, None),
        grammar_for("tool_calling", None, None, tools),
    ]
    for grammar in grammars:
        assert grammar is not None and grammar.startswith("# edgetune: ")
        assert grammar_parses(smollm2_vocab, grammar), grammar


def test_json_strings_cannot_hold_raw_control_characters() -> None:
    """llama-cpp-python's converter admits a raw newline in a JSON string, which json.loads
    refuses; the grammar carries the tightened rule (and would lose it silently if a new
    llama-cpp-python changed how it writes the rule, which this catches)."""
    grammar = grammar_for("extraction", None, SCHEMA, None)
    assert grammar is not None
    char = next(line for line in grammar.splitlines() if line.startswith("char ::= "))
    assert char.startswith('char ::= [^"\\\\\\x00-\\x1F]')


def test_a_schema_the_converter_refuses_falls_back_to_the_scored_keywords(smollm2_vocab: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"zip": {"type": "string", "pattern": "[0-9]{5}"}, "n": {"type": "integer"}},
        "required": ["zip"],
    }
    grammar = grammar_for("extraction", None, schema, None)
    assert grammar is not None and grammar_parses(smollm2_vocab, grammar)
    first = grammar.splitlines()[0]
    assert "type/properties/required/enum/items" in first and "Pattern must start" in first
    assert "zip-kv" in grammar and "n-kv" in grammar  # the properties are still constrained


# extraction / tool calling: the rows, the grammar, the token budget under it, what a valid answer
# is, and how an answer in the task's format begins (checked on a short unconstrained run).
CASES: dict[
    str, tuple[Callable[[], list[dict]], str | None, int, Callable[[str], bool], Callable[[str], bool]]
] = {
    "extraction": (
        lambda: _rows(
            "Extract the product and a 1-10 rating as JSON.", TEXTS, '{"product": "x", "rating": 1}'
        ),
        grammar_for("extraction", None, SCHEMA, None),
        48,
        _is_schema_json,
        lambda out: out.lstrip().startswith("{"),
    ),
    "tool_calling": (
        lambda: _rows("", ["weather in boston?", "what time is it in tokyo?", "hello"], "x", TOOLS),
        grammar_for("tool_calling", None, None, TOOLS),
        48,
        _is_known_call,
        lambda out: out.lstrip().startswith((TOOL_CALL_START, "[")),
    ),
}


@pytest.mark.parametrize("task", list(CASES))
def test_with_the_grammar_every_answer_has_the_tasks_shape(task: str, smollm2: Path) -> None:
    """SmolLM2 was never trained on these tasks: free, it answers in prose (measured: no answer
    begins as JSON or a call); under the grammar every answer is schema-valid JSON / a call of a
    known tool with valid arguments, within the task's token budget."""
    make_rows, grammar, max_new_tokens, valid, in_format = CASES[task]
    rows = make_rows()
    free = generate_gguf(smollm2, rows, n_ctx=1024, max_new_tokens=12)
    constrained = generate_gguf(smollm2, rows, n_ctx=1024, max_new_tokens=max_new_tokens, grammar=grammar)
    print(f"{task}: free {free}\nconstrained {constrained}")
    assert all(valid(out) for out in constrained)
    assert sum(map(in_format, free)) < len(rows)


def test_the_artifact_eval_scores_with_and_without_the_grammar(smollm2: Path) -> None:
    """Classification through evaluate_model: free (measured: 1 of 3 answers names a label) and
    under the grammar in its own process, as the worker scores artifacts, where every answer is a
    label (parse rate 1) and the speed run still happens, unconstrained."""
    rows = _rows("Classify the sentiment: positive, negative or neutral.", TEXTS, "positive")
    grammar = grammar_for("classification", LABELS, None, None)
    free = evaluate_model("gguf", smollm2, rows, "classification", LABELS, n_ctx=512)
    stats = RuntimeStats(runtime="llama.cpp")
    constrained = evaluate_model(
        "gguf", smollm2, rows, "classification", LABELS, n_ctx=512, stats=stats, grammar=grammar
    )
    assert constrained.parse_rate == 1.0 and stats.decode_tokens > 0
    assert free.parse_rate is not None and free.parse_rate < 1.0


def _calls_a_known_tool_first(out: str) -> bool:
    # The random model may go on writing calls until the token budget cuts it off: its answers are
    # checked up to the first call's name, which the grammar alone decides is a known tool.
    return re.match(r"(<\|tool_call_start\|>)?\[(get_weather|get_time)\(", out) is not None


def test_how_the_markers_are_matched(tiny_gguf: Path) -> None:
    """The tiny LFM2's vocabulary has `<|tool_call_start|>` / `<|tool_call_end|>` as special tokens.

    The default grammar writes them as quoted text, and llama.cpp matches a candidate token by its
    text, special tokens included: pushed towards the marker tokens the model samples them
    (llama-cpp-python leaves special tokens out of the text it returns, so the answer starts at
    "["); pushed away from them it spells the same text out piece by piece, which a quoted literal
    cannot forbid. The strict grammar (`marker_tokens=True`, token syntax) allows only the special
    token, even when the model is pushed away from it."""
    from llama_cpp import Llama, LlamaGrammar

    quoted = grammar_for("tool_calling", None, None, TOOLS)
    strict = grammar_for("tool_calling", None, None, TOOLS, marker_tokens=True)
    assert quoted is not None and strict is not None and '"<|tool_call_start|>"' not in strict
    llm = Llama(model_path=str(tiny_gguf), n_ctx=512, n_threads=2, verbose=False, seed=0)
    try:
        markers = [
            llm.tokenize(m.encode(), add_bos=False, special=True) for m in (TOOL_CALL_START, TOOL_CALL_END)
        ]
        assert [len(m) for m in markers] == [1, 1]  # special tokens in this vocabulary

        def answer(grammar: str, bias: float) -> str:
            result: Any = llm.create_chat_completion(
                messages=[{"role": "user", "content": "weather in boston?"}],
                tools=TOOLS,
                temperature=0,
                max_tokens=48,
                grammar=LlamaGrammar.from_string(grammar),
                logit_bias={m[0]: bias for m in markers},
            )
            return str(result["choices"][0]["message"]["content"])

        towards, away, strict_away = answer(quoted, 50.0), answer(quoted, -100.0), answer(strict, -100.0)
    finally:
        llm.close()
    assert towards.startswith("[") and _calls_a_known_tool_first(towards)
    assert away.startswith(TOOL_CALL_START) and _calls_a_known_tool_first(away)
    assert strict_away.startswith("[") and _calls_a_known_tool_first(strict_away)


def test_marker_tokens_need_a_vocabulary_that_has_them(tiny_gguf: Path, smollm2: Path) -> None:
    """SmolLM2's vocabulary has no marker tokens, so llama.cpp cannot parse the strict grammar for
    it; the runner says so instead of letting llama-cpp-python 0.3.36 segfault on it."""
    strict = grammar_for("tool_calling", None, None, TOOLS, marker_tokens=True)
    assert has_marker_tokens(tiny_gguf) and not has_marker_tokens(smollm2)
    rows = _rows("", ["weather in boston?", "hello"], "x", TOOLS)
    outputs = generate_gguf(tiny_gguf, rows, n_ctx=512, max_new_tokens=24, grammar=strict)
    assert all(out.startswith("[") and _calls_a_known_tool_first(out) for out in outputs)
    with pytest.raises(ValueError, match="does not parse"):
        generate_gguf(smollm2, rows, n_ctx=512, max_new_tokens=8, grammar=strict)
