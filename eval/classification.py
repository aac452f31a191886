"""Classification: which label an answer names, and per-class precision, recall and F1.

Accuracy alone hides a model that always answers the majority label (on a 3:1 eval set that is 75%
accuracy); macro-F1 averages the per-class F1 with equal weight, so that model scores about 0.43.
"""

from __future__ import annotations

import numpy as np

from domain.canonical import normalize


def match_label(pred: str, labels: list[str]) -> str | None:
    """The label `pred` names, or None.

    A prediction names a label when, normalised, it equals the label or starts with the label's
    words ("negative, because the screen broke" -> "negative"). When several labels are prefixes
    the longest wins, so "very positive" is not read as "very" or "positive".
    """
    words = normalize(pred).split()
    best: str | None = None
    best_len = 0
    for label in labels:
        label_words = normalize(label).split()
        if label_words and words[: len(label_words)] == label_words and len(label_words) > best_len:
            best, best_len = label, len(label_words)
    return best


def classification_match(pred: str, label: str, labels: list[str]) -> bool:
    """True when `pred` names `label` (see `match_label`) among the task's `labels`."""
    matched = match_label(pred, labels)
    return matched is not None and normalize(matched) == normalize(label)


def encode_labels(
    references: list[str], predicted: list[str | None]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Class ids for references and predicted labels, compared normalised ("Spam" is "spam").

    Returns:
        true_ids, pred_ids: one id per row; a prediction that names no label gets -1, so it counts
            against its row's true class (a false negative) and for no class (no false positive).
        classes: the class names, in id order (first spelling seen, references first).
    """
    ids: dict[str, int] = {}
    classes: list[str] = []
    for label in [*references, *(p for p in predicted if p is not None)]:
        if normalize(label) not in ids:
            ids[normalize(label)] = len(classes)
            classes.append(label)
    true_ids = np.array([ids[normalize(r)] for r in references], dtype=int)
    pred_ids = np.array([-1 if p is None else ids[normalize(p)] for p in predicted], dtype=int)
    return true_ids, pred_ids, classes


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # x / 0 is 0 here, as sklearn's zero_division=0: a class never predicted has precision 0.
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def class_scores(
    true_ids: np.ndarray, pred_ids: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support (rows whose true class it is).

    precision = TP / (rows predicted as the class), recall = TP / support, F1 = 2PR / (P + R).
    """
    tp = np.bincount(true_ids[true_ids == pred_ids], minlength=n_classes).astype(float)
    predicted = np.bincount(pred_ids[pred_ids >= 0], minlength=n_classes).astype(float)
    support = np.bincount(true_ids, minlength=n_classes).astype(float)
    precision, recall = _divide(tp, predicted), _divide(tp, support)
    return precision, recall, _divide(2 * precision * recall, precision + recall), support


def macro_f1_ids(true_ids: np.ndarray, pred_ids: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes that occur in the references or the predictions of these rows.

    A label of the task that neither occurs nor is predicted has no F1 to speak of; counting it as
    0 would punish the model for the eval set's sampling (and bootstrap resamples drop classes).
    """
    _, _, f1, support = class_scores(true_ids, pred_ids, n_classes)
    predicted = np.bincount(pred_ids[pred_ids >= 0], minlength=n_classes)
    present = (support > 0) | (predicted > 0)
    return float(f1[present].mean())


def macro_f1(references: list[str], predicted: list[str | None]) -> float:
    """Macro-F1 of predicted labels (None: the answer named no label) against reference labels."""
    true_ids, pred_ids, classes = encode_labels(references, predicted)
    return macro_f1_ids(true_ids, pred_ids, len(classes))


def per_class_report(references: list[str], predicted: list[str | None]) -> dict[str, dict[str, float]]:
    """`{label: {"precision", "recall", "f1", "support"}}`, for a report next to the headline score."""
    true_ids, pred_ids, classes = encode_labels(references, predicted)
    precision, recall, f1, support = class_scores(true_ids, pred_ids, len(classes))
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
