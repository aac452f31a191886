from __future__ import annotations

import pytest

from eval.metrics import classification_match, match_label, normalize, score, token_f1

LABELS = ["positive", "negative", "neutral"]


def test_normalize() -> None:
    assert normalize("  Positive.<|im_end|>") == "positive"
    assert normalize("Very-POSITIVE!!\n") == "very positive"
    assert (
        normalize('<|tool_call_start|>[get_weather(city="Boston")]<|tool_call_end|>')
        == "get weather city boston"
    )


@pytest.mark.parametrize(
    ("pred", "label", "expected"),
    [
        ("positive", "positive", True),
        ("Positive.", "positive", True),
        ("negative, the battery died", "negative", True),  # first label-word is the label
        ("NEUTRAL", "neutral", True),
        ("I think it is positive", "positive", False),  # the answer must lead with the label
        ("positively great", "positive", False),  # a word that merely starts with the label
        ("", "positive", False),
    ],
)
def test_classification_match(pred: str, label: str, expected: bool) -> None:
    assert classification_match(pred, label, LABELS) is expected


def test_longest_label_wins() -> None:
    labels = ["positive", "very positive"]
    assert match_label("very positive!", labels) == "very positive"
    assert match_label("positive", labels) == "positive"
    assert not classification_match("very positive", "positive", labels)


def test_token_f1() -> None:
    assert token_f1("The capital is Paris.", "the capital is paris") == 1.0
    assert token_f1("Paris", "the capital is paris") == pytest.approx(2 * 1.0 * 0.25 / 1.25)
    assert token_f1("London", "Paris") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "Paris") == 0.0


def test_accuracy_with_parse_rate_and_ci() -> None:
    predictions = ["Positive.", "negative because of the screen", "neutral", "no idea"]
    references = ["positive", "negative", "positive", "neutral"]
    result = score("classification", predictions, references, LABELS)
    assert (result.metric, result.score, result.n) == ("accuracy", 0.5, 4)
    assert result.parse_rate == 0.75
    assert 0.0 <= result.ci_low <= result.score <= result.ci_high <= 1.0
    assert result == score("classification", predictions, references, LABELS)  # seeded bootstrap


def test_labels_default_to_references_and_case_is_ignored() -> None:
    result = score("classification", ["spam", "ham"], ["Spam", "Spam"])
    assert result.score == 0.5


def test_generation_f1_and_degenerate_ci() -> None:
    result = score("generation", ["the capital is paris", "tokyo"], ["The capital is Paris.", "Tokyo."])
    assert (result.metric, result.score, result.n, result.parse_rate) == ("token_f1", 1.0, 2, None)
    assert (result.ci_low, result.ci_high) == (1.0, 1.0)

    mixed = score("generation", ["paris", "london", "rome", "x"], ["paris", "paris", "rome", "y"])
    assert 0.0 <= mixed.ci_low <= mixed.score == 0.5 <= mixed.ci_high <= 1.0
    assert mixed.to_dict()["metric"] == "token_f1"


def test_mismatched_or_empty_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="as many predictions as references"):
        score("generation", ["a"], ["a", "b"])
    with pytest.raises(ValueError):
        score("classification", [], [])
