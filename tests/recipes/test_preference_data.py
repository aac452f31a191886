"""Preference rows: both accepted formats, the canonical row, and every bad line with its reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domain.chat_rows import RowError
from recipes.preference_data import (
    canonical_row,
    load_preference_rows,
    parse_preference_jsonl,
)

SYSTEM = {"role": "system", "content": "Classify the sentiment of the review."}


def trl_row(review: str, chosen: str, rejected: str) -> dict[str, Any]:
    return {
        "prompt": [SYSTEM, {"role": "user", "content": f"Review: {review}"}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def openai_row(review: str, chosen: str, rejected: str) -> dict[str, Any]:
    return {
        "input": {"messages": [SYSTEM, {"role": "user", "content": f"Review: {review}"}]},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


def jsonl(*rows: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def test_both_formats_give_the_same_canonical_rows() -> None:
    pairs = [("great product", "positive", "negative"), ("awful quality", "negative", "positive")]
    trl, trl_errors = parse_preference_jsonl(jsonl(*(trl_row(*p) for p in pairs)))
    openai, openai_errors = parse_preference_jsonl(jsonl(*(openai_row(*p) for p in pairs)))
    assert trl_errors == [] and openai_errors == []
    assert trl == openai
    assert trl[0] == {
        "prompt": [SYSTEM, {"role": "user", "content": "Review: great product"}],
        "chosen": [{"role": "assistant", "content": "positive"}],
        "rejected": [{"role": "assistant", "content": "negative"}],
    }


def test_plain_strings_become_one_user_and_one_assistant_turn() -> None:
    row = canonical_row({"prompt": "Review: good price", "chosen": "positive", "rejected": "negative"})
    assert row == {
        "prompt": [{"role": "user", "content": "Review: good price"}],
        "chosen": [{"role": "assistant", "content": "positive"}],
        "rejected": [{"role": "assistant", "content": "negative"}],
    }


def test_tools_and_tool_calls_are_kept_as_lfm_text() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Boston"}'}}
    row = canonical_row(
        {
            "input": {"messages": [{"role": "user", "content": "Weather in Boston?"}], "tools": tools},
            "preferred_output": [{"role": "assistant", "content": None, "tool_calls": [call]}],
            "non_preferred_output": [{"role": "assistant", "content": "I cannot check the weather."}],
        }
    )
    assert isinstance(row, dict)
    assert row["tools"] == tools
    assert row["chosen"] == [
        {"role": "assistant", "content": '<|tool_call_start|>[get_weather(city="Boston")]<|tool_call_end|>'}
    ]


def test_every_bad_row_is_reported_with_its_line_and_reason() -> None:
    good = trl_row("great product", "positive", "negative")
    data = jsonl(
        good,  # 1
        '{"prompt": "Review: bad price", "chosen": ',  # 2: truncated JSON
        {"prompt": "Review: bad price", "chosen": "negative"},  # 3: no rejected
        trl_row("good price", "positive", "positive"),  # 4: chosen == rejected
        {**good, "chosen": [{"role": "assistant", "content": "  "}]},  # 5: empty content
        {**good, "rejected": [{"role": "user", "content": "negative"}]},  # 6: wrong role
        openai_row("awful quality", "negative", "positive") | {"preferred_output": []},  # 7: empty list
        {"messages": [{"role": "user", "content": "hi"}]},  # 8: an SFT row, not a preference
        {**good, "prompt": [{"role": "robot", "content": "Review: great product"}]},  # 9: unknown role
        "",  # 10: blank lines are skipped
        {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
        | {"chosen": "a", "rejected": "b"},  # 11: the prompt ends on the assistant's turn
        openai_row("great product", "positive", "negative"),  # 12
        '["not", "an", "object"]',  # 13
        {**good, "prompt": ""},  # 14: empty prompt
    )
    rows, errors = parse_preference_jsonl(data)
    assert len(rows) == 2
    assert [(e.line, e.reason) for e in errors] == [
        (2, "bad JSON (Expecting value at column 43)"),
        (3, "missing 'rejected'"),
        (4, "'chosen' and 'rejected' are identical: a preference needs two different answers"),
        (5, "chosen[0].content is empty"),
        (6, "rejected[0].role must be 'assistant', got 'user'"),
        (7, "'preferred_output' must be a string or a non-empty list of messages"),
        (
            8,
            "missing 'prompt', 'chosen' and 'rejected' (TRL's preference format) or 'input', "
            "'preferred_output' and 'non_preferred_output' (OpenAI's DPO format)",
        ),
        (9, "prompt[0].role 'robot' is unknown (expected one of ['assistant', 'system', 'tool', 'user'])"),
        (11, "prompt must end with a user or tool turn, not 'assistant'"),
        (13, "row must be a JSON object"),
        (14, "'prompt' is empty"),
    ]
    assert all(isinstance(e, RowError) for e in errors)  # the same error type as chat-row uploads


def test_openai_rows_name_their_own_fields() -> None:
    row = openai_row("great product", "positive", "negative")
    assert canonical_row({k: v for k, v in row.items() if k != "non_preferred_output"}) == (
        "missing 'non_preferred_output'"
    )
    assert canonical_row({**row, "input": {"tools": []}}) == "missing 'input.messages' (a non-empty list)"
    assert canonical_row(openai_row("great product", "positive", "positive")) == (
        "'preferred_output' and 'non_preferred_output' are identical: "
        "a preference needs two different answers"
    )
    bad_message = {**row, "input": {"messages": [{"role": "user", "content": ""}]}}
    assert canonical_row(bad_message) == "input.messages[0].content is empty"


def test_errors_are_not_capped() -> None:
    bad = {"prompt": "x", "chosen": "same", "rejected": "same"}
    rows, errors = parse_preference_jsonl(jsonl(*[bad] * 150))
    assert rows == [] and [e.line for e in errors] == list(range(1, 151))


def test_load_raises_naming_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(jsonl(trl_row("great product", "positive", "negative"), "{oops", {"prompt": "x"}))
    with pytest.raises(ValueError, match=r"2 invalid preference row\(s\)") as err:
        load_preference_rows(path)
    assert "line 2: bad JSON" in str(err.value)
    assert "line 3: missing 'chosen', 'rejected'" in str(err.value)

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        load_preference_rows(empty)
    assert load_preference_rows(_one_good(tmp_path))[0]["chosen"][0]["content"] == "positive"


def _one_good(tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_bytes(jsonl(openai_row("great product", "positive", "negative")))
    return path
