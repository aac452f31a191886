"""eval/prompting.py: the prompted base's rows, built with a fake token counter (one token per word,
plus 4 per message for the template's markers), so no model is needed."""

from __future__ import annotations

from collections import Counter
from typing import Any

from domain.canonical import normalize
from eval.prompting import (
    candidate_shots,
    choose_k,
    few_shot_rows,
    order_shots,
    shot_pair,
    task_instruction,
)
from eval.runners import prompts_and_references

LABELS = ["positive", "negative", "neutral"]
SYSTEM = "Classify the sentiment. Answer with exactly one of: positive, negative, neutral."


def count(prompt: dict[str, Any]) -> int:
    return sum(4 + len(m["content"].split()) for m in prompt["messages"])


def row(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    head = [{"role": "system", "content": system}] if system else []
    return {"messages": [*head, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def pool(per_label: dict[str, int]) -> list[dict[str, Any]]:
    return [
        row(f"{label} review number {i}", label, SYSTEM) for label, n in per_label.items() for i in range(n)
    ]


HELD_OUT = [row("great phone", "positive", SYSTEM), row("broken on arrival", "negative", SYSTEM)]


def shot_turns(prompted: dict[str, Any]) -> list[tuple[str, str]]:
    """The (user, answer) examples placed before the row's own user turn."""
    messages = [m for m in prompted["messages"] if m["role"] != "system"][:-2]
    return [(u["content"], a["content"]) for u, a in zip(messages[::2], messages[1::2], strict=True)]


def test_shots_are_training_rows_never_held_out_ones_nor_their_texts() -> None:
    training = pool({"positive": 3, "negative": 3}) + [
        HELD_OUT[0],  # a held-out row among the training rows
        row("Great phone!", "positive", SYSTEM),  # the same user text, spelt differently
        row("positive review number 0", "positive", SYSTEM),  # a duplicate training text
    ]
    rows, k = few_shot_rows(HELD_OUT, training, "classification", LABELS, count, 10_000)
    assert k == 6  # the six distinct training texts; the duplicate and the held-out texts dropped
    held_texts = {normalize(r["messages"][1]["content"]) for r in HELD_OUT}
    for prompted in rows:
        shots = shot_turns(prompted)
        assert len(shots) == k and not {normalize(u) for u, _ in shots} & held_texts
    assert shot_turns(rows[0]) == shot_turns(rows[1])  # one prompt for every row


def test_classification_shots_are_balanced_across_labels_and_seeded() -> None:
    training = pool({"positive": 10, "negative": 2, "neutral": 3})
    rows, k = few_shot_rows(HELD_OUT, training, "classification", LABELS, count, 10_000, max_shots=6)
    assert k == 6 and Counter(a for _, a in shot_turns(rows[0])) == dict.fromkeys(LABELS, 2)
    rows8, _ = few_shot_rows(HELD_OUT, training, "classification", LABELS, count, 10_000, max_shots=8)
    # negative has only 2 examples: the rounds go on with the labels that have some left
    assert Counter(a for _, a in shot_turns(rows8[0])) == {"positive": 3, "negative": 2, "neutral": 3}
    again, _ = few_shot_rows(HELD_OUT, list(reversed(training)), "classification", LABELS, count, 10_000)
    other, _ = few_shot_rows(HELD_OUT, training, "classification", LABELS, count, 10_000, seed=1)
    assert again == rows8  # the pool's order does not matter, only the seed
    assert shot_turns(other[0]) != shot_turns(rows8[0])


def test_every_round_of_the_round_robin_holds_each_label_once() -> None:
    shots = candidate_shots(pool({"positive": 4, "negative": 4}), [], LABELS)
    ordered = order_shots(shots, "classification", seed=3)
    rounds = [ordered[i : i + 2] for i in range(0, 8, 2)]
    assert all(sorted(a for _, a in r) == ["negative", "positive"] for r in rounds)


def test_classification_examples_must_answer_with_a_label() -> None:
    training = pool({"positive": 2}) + [row("meh", "It is hard to say.", SYSTEM)]
    rows, k = few_shot_rows(HELD_OUT, training, "classification", LABELS, count, 10_000)
    assert k == 2 and {a for _, a in shot_turns(rows[0])} == {"positive"}


def test_k_shrinks_to_fit_the_budget() -> None:
    training = pool({"positive": 4, "negative": 4})
    # Each example is two messages of 4 + 4 words and 4 + 1: 13 tokens; the longest held-out row
    # bare is system (4 + 11) + user (4 + 3) = 22 tokens; classification answers get 16 new tokens.
    longest_bare, per_shot, new = 22, 13, 16
    budget = longest_bare + 3 * per_shot + new + per_shot - 1  # room for 3 examples, not 4
    rows, k = few_shot_rows(HELD_OUT, training, "classification", LABELS, count, budget)
    assert k == 3
    prompts, _ = prompts_and_references(rows)
    assert max(count(p) for p in prompts) + new <= budget
    assert max(count(p) for p in prompts) + new + per_shot > budget  # a 4th would not fit
    shots = order_shots(candidate_shots(training, HELD_OUT, LABELS), "classification")
    assert choose_k(HELD_OUT, shots, count, budget + 1, new) == 4


def test_k_is_0_when_not_one_example_fits() -> None:
    rows, k = few_shot_rows(HELD_OUT, pool({"positive": 3}), "classification", LABELS, count, 40)
    assert k == 0 and rows == HELD_OUT  # the rows' own system turn, no example
    rows, k = few_shot_rows(HELD_OUT, [], "classification", LABELS, count, 10_000)
    assert k == 0 and rows == HELD_OUT  # nothing usable to show


def test_the_rows_system_turn_is_kept_and_one_is_added_where_missing() -> None:
    bare = [row("great phone", "positive"), HELD_OUT[1]]
    rows, k = few_shot_rows(
        bare, pool({"positive": 1, "negative": 1}), "classification", LABELS, count, 10_000
    )
    assert k == 2
    added, kept = rows[0]["messages"], rows[1]["messages"]
    assert added[0] == {
        "role": "system",
        "content": "Classify the user's message. Answer with exactly one of: positive, negative, neutral.",
    }
    assert kept[0] == {"role": "system", "content": SYSTEM}
    assert [m["role"] for m in kept] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert sum(m["role"] == "system" for m in kept) == 1
    # the reference is still the row's own last assistant turn, and its prompt ends with its user text
    prompts, refs = prompts_and_references(rows)
    assert refs == ["positive", "negative"] and prompts[1]["messages"][-1]["content"] == "broken on arrival"


def test_instructions_per_task_type() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"}}}
    extraction = task_instruction("extraction", None, schema)
    assert extraction is not None and "only a JSON object with the fields name, city" in extraction
    assert "only a JSON object," in (task_instruction("extraction", None) or "")
    assert task_instruction("tool_calling", None) is None  # the tools travel in the row's `tools`
    assert task_instruction("generation", None) is None


def test_tool_rows_keep_their_tools_and_get_no_added_system_turn() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    call = "<|tool_call_start|>[f()]<|tool_call_end|>"
    held = [{**row("call f please", call), "tools": tools}]
    training = [{**row(f"run f now {i}", call), "tools": tools} for i in range(3)]
    rows, k = few_shot_rows(held, training, "tool_calling", None, count, 10_000)
    assert k == 3 and rows[0]["tools"] == tools and rows[0]["messages"][0]["role"] == "user"


def test_rows_that_cannot_be_examples_are_skipped() -> None:
    assert shot_pair({"prompt": "x", "chosen": "a", "rejected": "b"}) is None  # a preference pair
    assert (
        shot_pair({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]})
        is None
    )
    unrendered = {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]}
    assert shot_pair({"messages": [{"role": "user", "content": "u"}, unrendered]}) is None
    assert shot_pair(row("u", "  ")) is None
    assert shot_pair(row("u", "a", "s")) == ("u", "a")
