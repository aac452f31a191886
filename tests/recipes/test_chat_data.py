"""Tool-call normalisation, row loading and the training/inference chat templates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from recipes.chat_data import (
    TEMPLATES_DIR,
    inference_template,
    load_rows,
    normalize_row,
    to_lfm_tool_call,
    training_template,
)
from tests.recipes.conftest import LFM2_TEMPLATE, write_jsonl
from tests.support.tiny_lfm2 import build_tokenizer

GENERATION_TAG = re.compile(r"\{%-?\s*(end)?generation")


def call(name: str, arguments: Any) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}


# ---- tool calls ---------------------------------------------------------------------------------


def test_tool_call_uses_python_call_syntax() -> None:
    text = to_lfm_tool_call([call("get_weather", json.dumps({"location": "Boston", "days": 3}))])
    assert text == '<|tool_call_start|>[get_weather(location="Boston", days=3)]<|tool_call_end|>'


def test_tool_call_literals_and_escapes() -> None:
    args = {"q": 'say "hi"\\n', "line": "a\nb", "ok": True, "no": False, "none": None, "x": 1.5}
    text = to_lfm_tool_call([call("f", json.dumps(args))])
    inner = text.removeprefix("<|tool_call_start|>[").removesuffix("]<|tool_call_end|>")
    assert inner == r'f(q="say \"hi\"\\n", line="a\nb", ok=True, no=False, none=None, x=1.5)'


def test_tool_call_round_trips_through_python_ast() -> None:
    import ast

    args = {"tags": ["a", "b"], "filters": {"min": 1, "exact": True}, "name": "Zoë \u2603", "n": -2}
    text = to_lfm_tool_call([call("search", args), call("ping", "{}")])  # dict args are accepted too
    calls: Any = ast.parse(text.removeprefix("<|tool_call_start|>").removesuffix("<|tool_call_end|>")).body[0]
    parsed = [(c.func.id, {k.arg: ast.literal_eval(k.value) for k in c.keywords}) for c in calls.value.elts]
    assert parsed == [("search", args), ("ping", {})]


def test_normalize_row_moves_tool_calls_into_content() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    row: dict[str, Any] = {
        "tools": tools,
        "messages": [
            {"role": "user", "content": "Weather in Boston?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [call("get_weather", '{"location": "Boston"}')],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
            {"role": "assistant", "content": "21 degrees."},
        ],
    }
    out = normalize_row(row)
    assert out["tools"] == tools
    assert out["messages"][1] == {
        "role": "assistant",
        "content": '<|tool_call_start|>[get_weather(location="Boston")]<|tool_call_end|>',
    }
    assert out["messages"][2] == {"role": "tool", "content": '{"temp_c": 21}'}
    assert "tool_calls" in row["messages"][1]  # the input is not modified


def test_normalize_row_keeps_text_after_the_call() -> None:
    msg = {"role": "assistant", "content": "Checking.", "tool_calls": [call("f", "{}")]}
    out = normalize_row({"messages": [{"role": "user", "content": "hi"}, msg]})
    assert out["messages"][1]["content"] == "<|tool_call_start|>[f()]<|tool_call_end|>Checking."


def test_load_rows_lists_every_bad_line(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = tmp_path / "data.jsonl"
    path.write_text(
        json.dumps(good) + "\n{not json\n" + json.dumps({"messages": [good["messages"][0]]}) + "\n"
    )
    with pytest.raises(ValueError) as info:
        load_rows(path)
    assert "2 invalid row(s)" in str(info.value)
    assert "line 2: bad JSON" in str(info.value)
    assert "line 3: no assistant turn" in str(info.value)


def test_load_rows_normalizes(tmp_path: Path) -> None:
    row = {
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("f", "{}")]}]
    }
    rows = load_rows(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert rows[0]["messages"][1]["content"] == "<|tool_call_start|>[f()]<|tool_call_end|>"


# ---- templates ----------------------------------------------------------------------------------


def test_training_template_follows_the_architecture(tmp_path: Path) -> None:
    (tmp_path / "lfm").mkdir()
    (tmp_path / "lfm" / "config.json").write_text('{"model_type": "lfm2"}')
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    assert training_template(tmp_path / "lfm") == LFM2_TEMPLATE
    assert training_template(tmp_path / "llama") == (TEMPLATES_DIR / "chatml.jinja").read_text()


TOOL_ROW = normalize_row(
    {
        "tools": [{"name": "get_weather", "parameters": {"type": "object"}}],
        "messages": [
            {"role": "system", "content": "You answer weather questions."},
            {"role": "user", "content": "Weather in Boston?"},
            {"role": "assistant", "content": None, "tool_calls": [call("get_weather", '{"city": "Boston"}')]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny in Boston."},
            {"role": "user", "content": "And London?"},
            {"role": "assistant", "content": "I only know Boston."},
        ],
    }
)


@pytest.mark.parametrize("template_name", ["lfm2.jinja", "chatml.jinja"])
def test_inference_template_renders_the_same_text(template_name: str) -> None:
    template = (TEMPLATES_DIR / template_name).read_text()
    stripped = inference_template(template)
    assert not GENERATION_TAG.search(stripped)
    tok = build_tokenizer(template)
    for kwargs in ({}, {"add_generation_prompt": True}):
        trained = tok.apply_chat_template(
            TOOL_ROW["messages"], tools=TOOL_ROW["tools"], tokenize=False, **kwargs
        )
        tok.chat_template = stripped
        served = tok.apply_chat_template(
            TOOL_ROW["messages"], tools=TOOL_ROW["tools"], tokenize=False, **kwargs
        )
        tok.chat_template = template
        assert served == trained


def test_lfm2_template_renders_liquids_format() -> None:
    tok = build_tokenizer(LFM2_TEMPLATE)
    text = tok.apply_chat_template(TOOL_ROW["messages"][:4], tools=TOOL_ROW["tools"], tokenize=False)
    assert text == (
        "<|startoftext|><|im_start|>system\nYou answer weather questions.\n"
        'List of tools: <|tool_list_start|>[{"name": "get_weather", "parameters": {"type": "object"}}]'
        "<|tool_list_end|><|im_end|>\n"
        "<|im_start|>user\nWeather in Boston?<|im_end|>\n"
        '<|im_start|>assistant\n<|tool_call_start|>[get_weather(city="Boston")]<|tool_call_end|><|im_end|>\n'
        "<|im_start|>tool\n<|tool_response_start|>sunny<|tool_response_end|><|im_end|>\n"
    )


def _masked_spans(input_ids: list[int], mask: list[int], tok: Any) -> list[str]:
    spans, current = [], []
    for token, bit in zip(input_ids, mask, strict=True):
        if bit:
            current.append(token)
        elif current:
            spans.append(tok.decode(current))
            current = []
    if current:
        spans.append(tok.decode(current))
    return spans


@pytest.mark.parametrize("template_name", ["lfm2.jinja", "chatml.jinja"])
def test_assistant_mask_covers_exactly_the_assistant_tokens(template_name: str) -> None:
    tok = build_tokenizer((TEMPLATES_DIR / template_name).read_text())
    out = tok.apply_chat_template(
        TOOL_ROW["messages"], tools=TOOL_ROW["tools"], return_assistant_tokens_mask=True, return_dict=True
    )
    spans = _masked_spans(out["input_ids"], out["assistant_masks"], tok)
    # Each assistant turn, its <|im_end|> included (so the model learns to stop), and nothing else.
    assert spans == [m["content"] + "<|im_end|>" for m in TOOL_ROW["messages"] if m["role"] == "assistant"]
