from __future__ import annotations

import pytest

from eval.classification import macro_f1, per_class_report
from eval.metrics import score

# Six rows, three classes; the fifth answer names no label.
#   reference: a  a  a  b  b     c
#   predicted: a  a  b  b  None  c
# a: TP 2, predicted 2, support 3 -> P 1,   R 2/3, F1 2*(2/3)/(5/3) = 0.8
# b: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 0.5
# c: TP 1, predicted 1, support 1 -> P 1,   R 1,   F1 1
# macro-F1 = (0.8 + 0.5 + 1) / 3 = 2.3 / 3; accuracy = 4 / 6; parse rate = 5 / 6
REFERENCES = ["a", "a", "a", "b", "b", "c"]
PREDICTED = ["a", "a", "b", "b", None, "c"]


def test_macro_f1_of_a_known_confusion_matrix() -> None:
    assert macro_f1(REFERENCES, PREDICTED) == pytest.approx(2.3 / 3)


def test_per_class_report() -> None:
    report = per_class_report(REFERENCES, PREDICTED)
    assert report["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert report["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert report["c"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})


def test_majority_guesser_is_exposed_by_macro_f1() -> None:
    # 3 positive, 1 negative, always "positive": accuracy 0.75, but
    # positive F1 = 2 * (3/4 * 1) / (3/4 + 1) = 6/7 and negative F1 = 0, macro = 3/7.
    refs = ["positive", "positive", "positive", "negative"]
    assert macro_f1(refs, ["positive"] * 4) == pytest.approx(3 / 7)
    # "negative" is never predicted: precision 0 (nothing right out of nothing), not 1.
    report = per_class_report(refs, ["positive"] * 4)
    assert report["negative"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # Predicted but absent from the references: recall 0 for want of support, not 1.
    assert per_class_report(["a"], ["b"])["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_macro_f1_counts_only_classes_that_occur() -> None:
    # A predicted class with no support counts (F1 0: all its predictions are wrong); a task label
    # that neither occurs nor is predicted ("c") does not. a: P 1, R 1/2, F1 2/3; b: F1 0.
    result = score("classification", ["a", "b"], ["a", "a"], labels=["a", "b", "c"])
    assert result.get("macro_f1").score == pytest.approx(1 / 3)
    assert set(result.report["per_class"]) == {"a", "b"}


def test_labels_compare_normalised() -> None:
    assert macro_f1(["Spam", "ham"], ["spam", "HAM"]) == 1.0


def test_score_classification_has_accuracy_macro_f1_and_parse_rate() -> None:
    answers = ["a", "A.", "b, clearly", "b", "no idea", "c"]  # names a, a, b, b, -, c
    result = score("classification", answers, REFERENCES, labels=["a", "b", "c"])
    assert (result.metric, result.n) == ("accuracy", 6)
    assert result.score == pytest.approx(4 / 6)
    assert result.get("macro_f1").score == pytest.approx(2.3 / 3)
    assert result.parse_rate == pytest.approx(5 / 6) == result.get("parse_rate").score
    assert result.report["per_class"]["b"]["precision"] == 0.5
    for name in ("accuracy", "macro_f1", "parse_rate"):
        s = result.get(name)
        assert 0.0 <= s.ci_low <= s.score <= s.ci_high <= 1.0


def test_perfect_and_hopeless_classifiers_have_degenerate_cis() -> None:
    perfect = score("classification", REFERENCES, REFERENCES)
    assert perfect.get("macro_f1") == perfect.get("accuracy")
    assert (perfect.get("macro_f1").ci_low, perfect.get("macro_f1").ci_high) == (1.0, 1.0)
    hopeless = score("classification", ["?"] * 6, REFERENCES)
    assert hopeless.get("macro_f1").score == 0.0 and hopeless.parse_rate == 0.0
