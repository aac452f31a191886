"""Scoring model outputs against held-out references, every metric with a bootstrap confidence interval.

Eval sets here are small (a few dozen synthesized rows), so a point score alone invites gates that
flip on noise; every score carries a 95% bootstrap CI (resampling rows) and the gate reports it.

`score(task_type, predictions, references)` is the entry point. Per task type it computes:

| task type      | headline metric (`EvalResult.metric`) | also in `EvalResult.metrics`         |
| -------------- | ------------------------------------- | ------------------------------------ |
| classification | accuracy                              | macro_f1, parse_rate (names a label) |
| extraction     | field_f1                              | json_valid, schema_valid (if schema) |
| tool_calling   | exact_match (names and arguments)     | name_match, parse_rate               |
| generation     | token_f1                              | chrf, rouge_l                        |

All metrics are on 0..1. The pure per-row metrics live in classification.py, extraction.py,
tool_calls.py and generation.py; this module adds the CIs and builds the `EvalResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from domain.canonical import normalize
from domain.json_schema import schema_errors
from domain.lists import EvalTaskType
from domain.tool_calls import calls_match, parse_reference_calls, parse_tool_calls
from eval.classification import (
    classification_match,
    encode_labels,
    macro_f1_ids,
    match_label,
    per_class_report,
)
from eval.extraction import field_f1, parse_json_object
from eval.generation import chrf_from_statistics, chrf_statistics, rouge_l, token_f1

# Names that lived here before the per-task modules (classification_match, match_label, normalize,
# token_f1) are re-exported so existing imports keep working.
__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "EvalResult",
    "MetricScore",
    "TaskType",
    "bootstrap_ci",
    "bootstrap_statistic_ci",
    "classification_match",
    "match_label",
    "mean_score",
    "normalize",
    "resample_indices",
    "score",
    "score_classification",
    "score_extraction",
    "score_generation",
    "score_tool_calling",
    "statistic_score",
    "token_f1",
]

TaskType = EvalTaskType  # the one list lives in domain/lists.py
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class MetricScore:
    score: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class EvalResult:
    metric: str  # the headline metric: "accuracy", "field_f1", "exact_match" or "token_f1"
    score: float
    n: int
    ci_low: float
    ci_high: float
    parse_rate: float | None = None  # share of outputs in the task's format; None for generation
    metrics: dict[str, MetricScore] = field(default_factory=dict)  # every metric, the headline one too
    # the headline metric row by row, in the rows' order (0/1 hits or row F1s): what the gate pairs
    # to tell an artifact's drop from noise; empty when the headline is not a mean of rows
    per_item: list[float] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # e.g. per-class precision/recall/F1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """The inverse of `to_dict` (for results kept as JSON in a job's state between stages)."""
        metrics = {k: MetricScore(**v) for k, v in data.get("metrics", {}).items()}
        return cls(**{**data, "metrics": metrics})

    def get(self, name: str) -> MetricScore:
        """One metric with its CI; ValueError naming the metrics there are when it is absent."""
        if name == self.metric:
            return MetricScore(self.score, self.ci_low, self.ci_high)
        if name not in self.metrics:
            raise ValueError(
                f"no metric {name!r} in this result (has {sorted({self.metric, *self.metrics})})"
            )
        return self.metrics[name]


def resample_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """`resamples` x `n` row indices drawn with replacement; seeded, so every metric of one result
    (and a rerun on the same predictions) is resampled the same way."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(
    per_item: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile 95% CI of the mean; seeded, so the same predictions always give the same bounds."""
    means = per_item[resample_indices(len(per_item), resamples, seed)].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_statistic_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile 95% CI of any statistic of the rows (macro-F1, corpus chrF: not row means).
    `statistic` gets an array of row indices and returns the score of those rows."""
    values = [statistic(idx) for idx in resample_indices(n, resamples, seed)]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def mean_score(per_item: ArrayLike) -> MetricScore:
    """The mean of per-row scores (0/1 hits, or row F1s) with its bootstrap CI."""
    values = np.asarray(per_item, dtype=float)
    return MetricScore(float(values.mean()), *bootstrap_ci(values))


def statistic_score(statistic: Callable[[np.ndarray], float], n: int) -> MetricScore:
    """`statistic` over all `n` rows, with its bootstrap CI."""
    return MetricScore(float(statistic(np.arange(n))), *bootstrap_statistic_ci(statistic, n))


def _check_lengths(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references) or not references:
        counts = f"{len(predictions)} predictions, {len(references)} references"
        raise ValueError(f"need as many predictions as references, and at least one ({counts})")


def _result(
    headline: str, metrics: dict[str, MetricScore], n: int, per_item: ArrayLike, **extra: Any
) -> EvalResult:
    top = metrics[headline]
    rows = [float(v) for v in np.asarray(per_item, dtype=float)]
    return EvalResult(
        headline, top.score, n, top.ci_low, top.ci_high, metrics=metrics, per_item=rows, **extra
    )


def score_classification(
    predictions: list[str], references: list[str], labels: list[str] | None = None
) -> EvalResult:
    """Accuracy, macro-F1 and parse rate (the answer names some label), per-class table in `report`."""
    _check_lengths(predictions, references)
    labels = labels or sorted(set(references))
    predicted = [match_label(p, labels) for p in predictions]
    true_ids, pred_ids, classes = encode_labels(references, predicted)
    hits = true_ids == pred_ids
    metrics = {
        "accuracy": mean_score(hits),
        "macro_f1": statistic_score(
            lambda i: macro_f1_ids(true_ids[i], pred_ids[i], len(classes)), len(true_ids)
        ),
        "parse_rate": mean_score(pred_ids >= 0),
    }
    report = {"per_class": per_class_report(references, predicted)}
    return _result(
        "accuracy", metrics, len(references), hits, parse_rate=metrics["parse_rate"].score, report=report
    )


def _unparsable(kind: str, parsed: list[Any]) -> ValueError:
    rows = [i for i, r in enumerate(parsed) if r is None]
    more = " ..." if len(rows) > 10 else ""
    return ValueError(f"references must be {kind}; rows {rows[:10]}{more} (0-based) are not")


def score_extraction(
    predictions: list[str], references: list[str], schema: dict[str, Any] | None = None
) -> EvalResult:
    """Mean field-level F1, JSON validity (parse rate) and, given a JSON Schema, schema validity."""
    _check_lengths(predictions, references)
    parsed = [parse_json_object(r) for r in references]
    refs = [r for r in parsed if r is not None]
    if len(refs) < len(parsed):
        raise _unparsable("JSON objects", parsed)
    preds = [parse_json_object(p) for p in predictions]
    f1s = [field_f1(p, r) for p, r in zip(preds, refs, strict=True)]
    metrics = {
        "field_f1": mean_score(f1s),
        "json_valid": mean_score([p is not None for p in preds]),
    }
    if schema is not None:
        metrics["schema_valid"] = mean_score([p is not None and not schema_errors(p, schema) for p in preds])
    return _result("field_f1", metrics, len(references), f1s, parse_rate=metrics["json_valid"].score)


def score_tool_calling(predictions: list[str], references: list[str]) -> EvalResult:
    """Exact match (same calls with the same arguments), name match (same function names) and
    parse rate (the call text is well-formed; an answer with no call at all is well-formed)."""
    _check_lengths(predictions, references)
    parsed = [parse_reference_calls(r) for r in references]
    refs = [r for r in parsed if r is not None]
    if len(refs) < len(parsed):
        raise _unparsable("tool calls (LFM call text or OpenAI tool_calls)", parsed)
    preds = [parse_tool_calls(p) for p in predictions]
    pairs = list(zip(preds, refs, strict=True))
    exact = [p is not None and calls_match(p, r) for p, r in pairs]
    metrics = {
        "exact_match": mean_score(exact),
        "name_match": mean_score([p is not None and calls_match(p, r, arguments=False) for p, r in pairs]),
        "parse_rate": mean_score([p is not None for p in preds]),
    }
    return _result("exact_match", metrics, len(references), exact, parse_rate=metrics["parse_rate"].score)


def score_generation(predictions: list[str], references: list[str]) -> EvalResult:
    """Mean token F1 and ROUGE-L F1 per row, and corpus chrF (n-gram counts summed over the rows
    first, as sacrebleu's corpus_score; its CI resamples rows and sums their counts)."""
    _check_lengths(predictions, references)
    pairs = list(zip(predictions, references, strict=True))
    chrf_stats = np.array([chrf_statistics(p, r) for p, r in pairs], dtype=float)
    f1s = [token_f1(p, r) for p, r in pairs]
    metrics = {
        "token_f1": mean_score(f1s),
        "chrf": statistic_score(lambda i: chrf_from_statistics(chrf_stats[i].sum(axis=0)), len(pairs)),
        "rouge_l": mean_score([rouge_l(p, r) for p, r in pairs]),
    }
    return _result("token_f1", metrics, len(pairs), f1s)


def score(
    task_type: TaskType,
    predictions: list[str],
    references: list[str],
    labels: list[str] | None = None,
    schema: dict[str, Any] | None = None,
) -> EvalResult:
    """Score `predictions` against `references` for `task_type` (table in the module docstring).

    Args:
        labels (`list[str]`, *optional*): classification labels; defaults to the distinct references.
        schema (`dict`, *optional*): extraction only: a JSON Schema the answers must satisfy.

    Raises:
        ValueError: different counts or none; references that do not parse (extraction, tool calls).
    """
    if task_type == "classification":
        return score_classification(predictions, references, labels)
    if task_type == "extraction":
        return score_extraction(predictions, references, schema)
    if task_type == "tool_calling":
        return score_tool_calling(predictions, references)
    if task_type == "generation":
        return score_generation(predictions, references)
    raise ValueError(f"unknown task type {task_type!r}")


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely `k` or more agreements are by chance alone.
    Each term in logs (C(n, i) overflows a float past n ~ 1030; a dataset may check 5000 rows)."""
    if k <= 0 or p >= 1:
        return 1.0
    if p <= 0 or k > n:
        return 0.0
    log_c = math.lgamma(n + 1)
    terms = (
        log_c - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
        for i in range(k, n + 1)
    )
    return min(1.0, math.fsum(math.exp(t) for t in terms))
