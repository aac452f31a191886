"""Free-text generation: token F1, chrF and ROUGE-L against one reference per row.

The three see different things: token F1 is a bag of words (order-blind), ROUGE-L rewards words in
the reference's order, chrF matches character n-grams so "battery" and "batteries" share credit.
chrF follows sacrebleu's definition (char order 6, beta 2, whitespace ignored, no word n-grams);
scores here are on 0..1 where sacrebleu prints 0..100.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from domain.canonical import normalize

CHRF_ORDER = 6
CHRF_BETA = 2.0


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


def chrf_statistics(pred: str, ref: str, order: int = CHRF_ORDER) -> list[int]:
    """[pred n-grams, ref n-grams, matching n-grams] for n = 1..order, flattened (3 * order ints).

    Whitespace is dropped first, as sacrebleu does by default. Statistics add up over rows, which
    is how a corpus chrF is computed (sum, then one F-score), not a mean of row scores. As in
    sacrebleu, an order the reference is too short to have counts no prediction n-grams either, so
    a long answer to a 3-character reference is not charged for 4- to 6-grams no answer could match.
    """
    pred, ref = "".join(pred.split()), "".join(ref.split())
    stats = []
    for n in range(1, order + 1):
        pred_ngrams = Counter(pred[i : i + n] for i in range(len(pred) - n + 1))
        ref_ngrams = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        n_pred = pred_ngrams.total() if ref_ngrams else 0
        stats += [n_pred, ref_ngrams.total(), (pred_ngrams & ref_ngrams).total()]
    return stats


def chrf_from_statistics(stats: Sequence[float], beta: float = CHRF_BETA) -> float:
    """chrF_beta = (1 + b^2) P R / (b^2 P + R), P and R averaged over the n-gram orders both sides
    have (sacrebleu's "effective order": a 3-character answer has no 6-grams and is not punished
    for it). beta = 2 weighs recall twice as much as precision."""
    precisions, recalls = [], []
    for i in range(0, len(stats), 3):
        n_pred, n_ref, n_match = stats[i : i + 3]
        if n_pred > 0 and n_ref > 0:
            precisions.append(n_match / n_pred)
            recalls.append(n_match / n_ref)
    if not precisions:
        return 0.0
    precision, recall = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if precision + recall == 0:
        return 0.0
    b2 = beta**2
    return float((1 + b2) * precision * recall / (b2 * precision + recall))


def chrf(pred: str, ref: str) -> float:
    """Sentence chrF on 0..1 (sacrebleu's `sentence_score` / 100); empty strings score 0 as there."""
    return chrf_from_statistics(chrf_statistics(pred, ref))


def _lcs_length(a: list[str], b: list[str]) -> int:
    # Classic dynamic programme, one row at a time: O(len(a) * len(b)) time, O(len(b)) memory.
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1: P = LCS / pred tokens, R = LCS / ref tokens over normalised words; two empty
    strings score 1, as in `token_f1`."""
    pred_tokens, ref_tokens = normalize(pred).split(), normalize(ref).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    lcs = _lcs_length(pred_tokens, ref_tokens)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred_tokens), lcs / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)
