"""Scoring model outputs against held-out references, with a bootstrap confidence interval.

Eval sets here are small (a few dozen synthesized rows), so a point score alone invites gates that
flip on noise; every score carries a 95% bootstrap CI and the gate can compare against its bounds.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

TaskType = Literal["classification", "generation"]
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class EvalResult:
    metric: str  # "accuracy" or "token_f1"
    score: float
    n: int
    ci_low: float
    ci_high: float
    parse_rate: float | None = None  # classification: share of outputs that name any label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]*\|>")  # <|im_end|>, <|tool_call_start|>, ...


def normalize(text: str) -> str:
    """Lower-case, special-token markers and punctuation to spaces, whitespace collapsed, so
    "Positive.<|im_end|>" == "positive". Markers go because decoders differ in whether they print
    them (transformers skips special tokens here; references may carry LFM tool-call markers)."""
    text = _SPECIAL_TOKEN.sub(" ", text)
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


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


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style bag-of-tokens F1 over normalised words; two empty strings score 1."""
    pred_tokens, ref_tokens = normalize(pred).split(), normalize(ref).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def bootstrap_ci(
    per_item: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile 95% CI of the mean; seeded, so the same predictions always give the same bounds."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_item), size=(resamples, len(per_item)))
    means = per_item[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def score(
    task_type: TaskType, predictions: list[str], references: list[str], labels: list[str] | None = None
) -> EvalResult:
    """Accuracy (classification) or mean token F1 (generation), with a bootstrap 95% CI.

    Args:
        labels (`list[str]`, *optional*): classification labels; defaults to the distinct references.
    """
    if len(predictions) != len(references) or not references:
        counts = f"{len(predictions)} predictions, {len(references)} references"
        raise ValueError(f"need as many predictions as references, and at least one ({counts})")
    if task_type == "classification":
        labels = labels or sorted(set(references))
        matched = [match_label(p, labels) for p in predictions]
        hits = [
            m is not None and normalize(m) == normalize(r) for m, r in zip(matched, references, strict=True)
        ]
        per_item = np.array(hits, dtype=float)
        parse_rate: float | None = sum(m is not None for m in matched) / len(matched)
        metric = "accuracy"
    else:
        per_item = np.array([token_f1(p, r) for p, r in zip(predictions, references, strict=True)])
        parse_rate, metric = None, "token_f1"
    low, high = bootstrap_ci(per_item)
    return EvalResult(metric, float(per_item.mean()), len(per_item), low, high, parse_rate)
