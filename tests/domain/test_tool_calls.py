from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domain.tool_calls import (
    ToolCall,
    calls_match,
    parse_openai_tool_calls,
    parse_reference_calls,
    parse_tool_calls,
)
from eval.metrics import score
from recipes.chat_data import to_lfm_tool_call

START, END = "<|tool_call_start|>", "<|tool_call_end|>"


def _openai(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "call_1",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def test_one_call() -> None:
    text = f'{START}[get_weather(city="Boston", days=3)]{END}'
    assert parse_tool_calls(text) == [ToolCall("get_weather", {"city": "Boston", "days": 3})]


def test_several_calls_with_nested_arguments() -> None:
    text = (
        f"{START}[search(query='lfm2', filters={{\"year\": [2024, 2025], 'open': True}}, limit=None), "
        f"book(seats=(1, 2), price=9.5)]{END}"
    )
    assert parse_tool_calls(text) == [
        ToolCall("search", {"query": "lfm2", "filters": {"year": [2024, 2025], "open": True}, "limit": None}),
        ToolCall("book", {"seats": [1, 2], "price": 9.5}),  # a tuple is a JSON list
    ]


def test_quoted_and_escaped_strings() -> None:
    # Escaped quotes, a newline escape, a backslash, a unicode escape, and brackets and a closing
    # paren inside the string, which must not end the call.
    source = r"""[note(text="say \"hi\"\n, 'ok', a\\b \u00e9 ]) <tag>", alt='it\'s')]"""
    expected = ToolCall("note", {"text": "say \"hi\"\n, 'ok', a\\b \u00e9 ]) <tag>", "alt": "it's"})
    assert parse_tool_calls(START + source + END) == [expected]


def test_markers_are_optional_and_surrounding_text_ignored() -> None:
    expected = [ToolCall("f", {"a": 1})]
    assert parse_tool_calls("[f(a=1)]") == expected  # decoded with skip_special_tokens
    assert parse_tool_calls("  [f(a=1)]<|im_end|>") == expected
    assert parse_tool_calls(f"Let me check.{START}[f(a=1)]{END}It is sunny.") == expected
    assert parse_tool_calls(f"{START}[f(a=1)]") == expected  # end marker cut off, list complete
    assert parse_tool_calls(f"{START}[f(a=1)]{END} then {START}[g()]{END}") == [*expected, ToolCall("g", {})]
    assert parse_tool_calls(f"{START}[pkg.tools.lookup(id=1)]{END}") == [
        ToolCall("pkg.tools.lookup", {"id": 1})
    ]


def test_plain_answers_have_no_calls() -> None:
    assert parse_tool_calls("The weather in Boston is sunny.") == []
    assert parse_tool_calls("") == []
    assert parse_tool_calls(f"{START}[]{END}") == []


@pytest.mark.parametrize(
    "text",
    [
        f'{START}[get_weather(city="Boston"{END}',  # unclosed call
        f'{START}[get_weather(city="Boston")',  # cut by the token budget
        f'{START}get_weather(city="Boston"){END}',  # not a list
        f'{START}[get_weather("Boston")]{END}',  # positional argument
        f"{START}[f(**opts)]{END}",
        f"{START}[f(a=1, a=2)]{END}",  # repeated keyword
        f"{START}[f(a=x)]{END}",  # a name, not a literal
        f"{START}[f(a=true)]{END}",  # JSON's true is not Python's True
        f"{START}[f(a=1 + 2)]{END}",
        f"{START}[f(a={{1, 2}})]{END}",  # a set has no JSON form
        f"{START}[f(a=b'x')]{END}",
        f"{START}[f()()]{END}",
        f"{START}['f', g()]{END}",  # an item that is not a call
        f"{START}[f(a=1)] and more{END}",
        START + "[f(a=" + "[" * 500 + "]" * 500 + ")]" + END,  # nesting beyond the parser's limit
        "[1] see the footnote",  # a bare list that is not a call list
        "[f(a=1)] Done.",  # bare list with trailing text: its end cannot be known without markers
        f"{START}[f(a='\x00')]{END}",
    ],
)
def test_malformed_call_text_is_a_parse_failure_not_an_exception(text: str) -> None:
    assert parse_tool_calls(text) is None


def test_arguments_are_never_executed(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    text = f'{START}[f(a=open("{target}", "w").write("x"), b=__import__("os").remove("{target}"))]{END}'
    assert parse_tool_calls(text) is None
    assert not target.exists()


def test_round_trip_through_the_training_format() -> None:
    # recipes.chat_data renders OpenAI tool_calls as LFM text for training; parsing that text must
    # give back the same calls, escapes and nested values included.
    calls = [
        _openai("get_weather", {"city": 'São "Paulo"\n', "days": 3, "metric": True, "hint": None}),
        _openai("book", {"seats": [1, 2], "meta": {"k": [{"deep": 1.5}]}}),
    ]
    expected = parse_openai_tool_calls(calls)
    assert expected is not None and len(expected) == 2
    assert parse_tool_calls(to_lfm_tool_call(calls)) == expected


def test_openai_tool_calls() -> None:
    calls = [
        {"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"type": "function", "function": {"name": "g", "arguments": {"b": "x"}}},
        {"type": "function", "function": {"name": "h", "arguments": ""}},
    ]
    assert parse_openai_tool_calls(calls) == [
        ToolCall("f", {"a": 1}),
        ToolCall("g", {"b": "x"}),
        ToolCall("h", {}),
    ]
    assert parse_openai_tool_calls([{"type": "function", "function": {"arguments": "{}"}}]) is None
    assert parse_openai_tool_calls([{"function": {"name": "f", "arguments": "{bad"}}]) is None
    assert parse_openai_tool_calls([{"function": {"name": "f", "arguments": "[1]"}}]) is None
    assert parse_openai_tool_calls(["f"]) is None


def test_reference_forms() -> None:
    calls = [_openai("f", {"a": 1})]
    expected = [ToolCall("f", {"a": 1})]
    assert parse_reference_calls(calls) == expected
    assert parse_reference_calls(json.dumps(calls)) == expected
    assert parse_reference_calls(json.dumps({"role": "assistant", "tool_calls": calls})) == expected
    assert parse_reference_calls(f"{START}[f(a=1)]{END}") == expected
    assert parse_reference_calls("[]") == []
    assert parse_reference_calls("No tool is needed.") == []


def test_calls_match() -> None:
    ref = [ToolCall("f", {"a": 2, "b": [1]}), ToolCall("g", {})]
    assert calls_match([ToolCall("g", {}), ToolCall("f", {"b": [1.0], "a": 2.0})], ref)  # order, 2 == 2.0
    assert not calls_match([ToolCall("f", {"a": 2, "b": [1]})], ref)  # a call missing
    assert not calls_match([*ref, ToolCall("g", {})], ref)  # a call repeated
    assert not calls_match([ToolCall("f", {"a": 3, "b": [1]}), ToolCall("g", {})], ref)
    assert calls_match([ToolCall("f", {"a": 3}), ToolCall("g", {"x": 1})], ref, arguments=False)
    assert not calls_match([ToolCall("f", {"a": True})], [ToolCall("f", {"a": 1})])  # True is not 1
    assert calls_match(ref, ref[::-1]) and calls_match(ref[::-1], ref)


def test_score_tool_calling() -> None:
    refs = [
        f'{START}[get_weather(city="Boston")]{END}',
        json.dumps([_openai("get_time", {"tz": "EST"})]),
        f'{START}[get_weather(city="Paris"), get_time(tz="CET")]{END}',
        "It is sunny.",  # no call expected
    ]
    preds = [
        '[get_weather(city="Boston")]',  # exact (markers skipped by the decoder)
        f'{START}[get_time(tz="PST")]{END}',  # right name, wrong argument
        f'{START}[get_weather(city="Paris"), get_time(tz="CET"{END}',  # malformed
        "It is sunny today.",  # no call, rightly
    ]
    result = score("tool_calling", preds, refs)
    assert (result.metric, result.n) == ("exact_match", 4)
    assert result.score == pytest.approx(2 / 4)
    assert result.get("name_match").score == pytest.approx(3 / 4)
    assert result.parse_rate == pytest.approx(3 / 4) == result.get("parse_rate").score


def test_score_tool_calling_rejects_malformed_references() -> None:
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        score("tool_calling", ["[f()]"], [f"{START}[f(]{END}"])
