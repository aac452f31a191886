from __future__ import annotations

import numpy as np
import pytest

from domain.lists import EVAL_TASKS
from eval.metrics import (
    EvalResult,
    MetricScore,
    bootstrap_ci,
    bootstrap_statistic_ci,
    classification_match,
    match_label,
    normalize,
    score,
    token_f1,
)

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


def test_every_task_type_is_scored_and_unknown_ones_are_refused() -> None:
    expected = {
        "classification": ("accuracy", {"accuracy", "macro_f1", "parse_rate"}),
        "extraction": ("field_f1", {"field_f1", "json_valid"}),
        "tool_calling": ("exact_match", {"exact_match", "name_match", "parse_rate"}),
        "generation": ("token_f1", {"token_f1", "chrf", "rouge_l"}),
    }
    rows = {
        "classification": (["positive"], ["positive"]),
        "extraction": (['{"a": 1}'], ['{"a": 1}']),
        "tool_calling": (["[f(a=1)]"], ["<|tool_call_start|>[f(a=1)]<|tool_call_end|>"]),
        "generation": (["hello there"], ["hello there"]),
    }
    for task_type, (metric, metrics) in expected.items():
        result = score(task_type, *rows[task_type])  # type: ignore[arg-type]
        assert (result.metric, set(result.metrics), result.score) == (metric, metrics, 1.0)
        assert result.get(metric) == MetricScore(result.score, result.ci_low, result.ci_high)
        assert EVAL_TASKS[task_type].metric == metric  # type: ignore[index]  # the table agrees
    assert set(expected) == set(EVAL_TASKS)
    with pytest.raises(ValueError, match="unknown task type"):
        score("ranking", ["a"], ["a"])  # type: ignore[arg-type]
    for task_type in expected:
        with pytest.raises(ValueError, match="as many predictions as references"):
            score(task_type, [], [])  # type: ignore[arg-type]


def test_statistic_bootstrap_agrees_with_the_mean_bootstrap() -> None:
    # Same seed, same resampled rows: the CI of "mean of the rows" must be the same either way.
    per_item = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    assert bootstrap_statistic_ci(lambda idx: float(per_item[idx].mean()), len(per_item)) == bootstrap_ci(
        per_item
    )
    low, high = bootstrap_ci(per_item)
    assert 0.0 < low < per_item.mean() < high < 1.0


def test_eval_result_round_trips_through_its_dict() -> None:
    result = score("classification", ["a", "b", "x"], ["a", "a", "b"], ["a", "b"])
    data = result.to_dict()
    assert data["metrics"]["macro_f1"].keys() == {"score", "ci_low", "ci_high"}
    assert data["report"]["per_class"]["a"]["support"] == 2
    assert EvalResult.from_dict(data) == result
    with pytest.raises(ValueError, match="no metric 'chrf'"):
        result.get("chrf")
