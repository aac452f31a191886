from __future__ import annotations

from domain.canonical import canonical_json, strip_special_tokens


def test_strip_special_tokens() -> None:
    assert strip_special_tokens("  positive<|im_end|>\n") == "positive"
    assert strip_special_tokens("<|tool_call_start|>[f()]<|tool_call_end|>") == "[f()]"
    assert strip_special_tokens("a <b> c") == "a <b> c"  # only <|...|> markers


def test_canonical_json_equates_what_json_equates() -> None:
    assert (
        canonical_json({"b": 2.0, "a": [1, (2, 3)]})
        == canonical_json({"a": [1.0, [2, 3]], "b": 2})
        == ('{"a":[1,[2,3]],"b":2}')
    )
    assert canonical_json(True) != canonical_json(1)
    assert canonical_json(2.5) == "2.5"
    assert canonical_json("é") == '"é"'
