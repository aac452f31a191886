from __future__ import annotations

import pytest

from synth.filters import (
    DedupIndex,
    clean_answer,
    clean_text,
    label_leak,
    list_items,
    normalize,
    split_label_prefix,
    text_problem,
)

LABELS = ["positive", "negative", "neutral"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            'Sure! Here is a short review:\n\n"The blender broke after two days."',
            "The blender broke after two days.",
        ),
        (
            "Here's one: “Great hotel, tiny rooms, friendly staff.”",
            "Great hotel, tiny rooms, friendly staff.",
        ),
        ("Review: The app crashes every time I log in.", "The app crashes every time I log in."),
        ("Task: cooking help. Question: How long do I boil an egg?", "How long do I boil an egg?"),
        (
            "Hey guys,\n\nThe laptop is fast and quiet.\n\nThanks for reading!",
            "The laptop is fast and quiet.",
        ),
        ("The laptop is fast.\nThe battery lasts all day.", "The laptop is fast. The battery lasts all day."),
        (
            "Fast shipping and the shoes fit well. I would buy them ag",
            "Fast shipping and the shoes fit well.",
        ),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_clean_answer_keeps_paragraphs_and_drops_a_dangling_list_marker() -> None:
    assert clean_answer("Answer: Boil it.\n\nThen peel it.") == "Boil it.\n\nThen peel it."
    assert clean_answer("Here is a recipe:\n1.") == "Here is a recipe:"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Too short.", "too_short"),
        ("word " * 200, "too_long"),
        ("I think this is clearly a Positive one, love it.", "label_leak"),
        ("This is an example of a happy customer message.", "meta"),
        ("This product review is quite critical of the price.", "meta"),
        ("As an AI, I cannot write product reviews for you.", "meta"),
        # the bundled teacher on the routing task, talking about the writing instead of writing
        ("In a formal tone: the order arrived late.", "meta"),
        ("Rewrite the previous message in fewer words.", "meta"),
        ("Your text is already great, keep it up.", "meta"),
        ("Just a simple one. Here's a different one: change my order", "meta"),
        ("My name is Alex, and I've been a customer support chatbot for a while.", "meta"),
        ("The parcel was left at the wrong door again.", None),
        ("The tone of the support agent was rude on the phone.", None),
        ("The blender broke after two days of light use.", None),
        ("Everything about the positively huge room was great.", None),  # "positively" is not "positive"
    ],
)
def test_text_problem(text: str, reason: str | None) -> None:
    assert text_problem(text, LABELS) == reason


def test_requests_may_ask_for_examples_but_not_talk_like_an_assistant() -> None:
    assert text_problem("Can you give me an example of a quick dinner?", meta=False) is None
    assert text_problem("Sure, I'm happy to help with your question or request.", meta=False) == "meta"


def test_common_word_labels_are_not_leaks() -> None:
    assert not label_leak("No way, this is a great phone.", ["yes", "no"])
    assert label_leak("This is spam, obviously.", ["spam", "ham"])


def test_dedup_index_exact_and_near() -> None:
    index = DedupIndex()
    base = "The coffee maker broke after two weeks and support never answered my emails"
    index.add(base)
    assert (
        index.check("the coffee maker broke after two weeks, and support never answered my emails!")
        == "duplicate"
    )
    assert index.check(base + " again") == "near_duplicate"
    assert index.check("The hotel room was clean and the breakfast was excellent every single day") is None
    assert normalize(" Hello,  WORLD! ") == "hello world"


def test_split_label_prefix() -> None:
    assert split_label_prefix("Positive: Welcome to the Maldives!", LABELS) == (
        "Welcome to the Maldives!",
        "positive",
    )
    assert split_label_prefix("Positively great.", LABELS) == ("Positively great.", None)


def test_list_items_keeps_the_marked_lines_of_a_wrapped_list() -> None:
    wrapped = (
        "Here are three more:\n1. The invoice is wrong.\n\n2) I was charged twice.\n- Refund me.\n"
        "Hope this helps!"
    )
    assert list_items(wrapped) == ["The invoice is wrong.", "I was charged twice.", "Refund me."]
    # no markers: every non-empty line is an item
    assert list_items("The app crashes.\n\nMy phone will not start.\n") == [
        "The app crashes.",
        "My phone will not start.",
    ]
    assert list_items("") == []
