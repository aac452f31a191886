from __future__ import annotations

import itertools

import pytest

from eval.generation import chrf, chrf_from_statistics, chrf_statistics, rouge_l
from eval.metrics import score


def test_chrf_identical_and_disjoint() -> None:
    assert chrf("The cat sat on the mat.", "The cat sat on the mat.") == 1.0
    assert chrf("abc", "xyz") == 0.0
    assert chrf("", "abc") == 0.0  # as sacrebleu: no n-grams on one side, no effective order


def test_chrf_by_hand() -> None:
    # pred "ab", ref "abc". 1-grams: pred 2, ref 3, match 2. 2-grams: pred 1 (ab), ref 2 (ab bc),
    # match 1. No 3-grams in pred: orders 3-6 are not effective.
    # P = (2/2 + 1/1) / 2 = 1, R = (2/3 + 1/2) / 2 = 7/12
    # chrF2 = (1 + 4) P R / (4 P + R) = (35/12) / (55/12) = 7/11
    assert chrf_statistics("ab", "abc")[:6] == [2, 3, 2, 1, 2, 1]
    assert chrf("ab", "abc") == pytest.approx(7 / 11)


def test_chrf_ignores_whitespace_but_not_case() -> None:
    assert chrf("a b c", "abc") == 1.0
    assert chrf("ABC", "abc") == 0.0


def test_chrf_matches_sacrebleu_published_examples() -> None:
    # The values in Hugging Face's chrF metric card (metrics/chrf/README.md), computed by sacrebleu
    # with char_order 6, word_order 0, beta 2.
    pred = "The relationship between Obama and Netanyahu is not exactly friendly."
    ref = "The ties between Obama and Netanyahu are not particularly friendly."
    assert chrf(pred, ref) * 100 == pytest.approx(61.576379378113785, abs=1e-9)
    preds = [
        "The relationship between cats and dogs is not exactly friendly.",
        "a good bookshop is just a genteel black hole that knows how to read.",
    ]
    refs = [
        "The relationship between dogs and cats is not exactly friendly.",
        "A good bookshop is just a genteel Black Hole that knows how to read.",
    ]
    result = score("generation", preds, refs)
    assert result.get("chrf").score * 100 == pytest.approx(84.64214891738334, abs=1e-9)


def test_corpus_chrf_sums_statistics_before_scoring() -> None:
    # Rows ("ab", "abc") and ("abc", "abc"), counts summed per order:
    # 1-grams 5/6/5, 2-grams 3/4/3, 3-grams 1/2/1 (pred/ref/match); orders 4-6 empty.
    # P = 1, R = (5/6 + 3/4 + 1/2) / 3 = 25/36, chrF2 = 5 R / (4 + R) = 125/169 (not the mean of
    # the row scores, (7/11 + 1) / 2).
    stats = [a + b for a, b in zip(chrf_statistics("ab", "abc"), chrf_statistics("abc", "abc"), strict=True)]
    assert chrf_from_statistics(stats) == pytest.approx(125 / 169)
    assert score("generation", ["ab", "abc"], ["abc", "abc"]).get("chrf").score == pytest.approx(125 / 169)


def test_chrf_does_not_charge_orders_the_reference_lacks() -> None:
    # The reference "ab" has no 3-grams, so the prediction's 3-grams are not counted either.
    assert chrf_statistics("abcd", "ab")[6:9] == [0, 0, 0]


def test_rouge_l() -> None:
    # LCS of "a b c d" and "a c d" is "a c d": P = 3/4, R = 1, F1 = 1.5 / 1.75 = 6/7.
    assert rouge_l("a b c d", "a c d") == pytest.approx(6 / 7)
    assert rouge_l("The cat sat.", "the cat sat") == 1.0
    assert rouge_l("dog", "cat") == 0.0
    assert rouge_l("", "") == 1.0 and rouge_l("", "cat") == 0.0


def _brute_force_lcs(a: list[str], b: list[str]) -> int:
    # The longest subsequence of `a` that is also a subsequence of `b`, by trying them all.
    def is_subsequence(sub: tuple[str, ...], seq: list[str]) -> bool:
        it = iter(seq)
        return all(tok in it for tok in sub)

    for k in range(len(a), 0, -1):
        if any(is_subsequence(sub, b) for sub in itertools.combinations(a, k)):
            return k
    return 0


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("the cat the dog", "the dog the cat"),
        ("a b c d e f", "b a d c f e"),
        ("x a y b z c", "a b c x y z"),
        ("a a b b", "b b a a a"),
        ("one two three", "four five"),
    ],
)
def test_rouge_l_against_a_brute_force_lcs(pred: str, ref: str) -> None:
    p, r = pred.split(), ref.split()
    lcs = _brute_force_lcs(p, r)
    expected = 0.0 if lcs == 0 else 2 * (lcs / len(p)) * (lcs / len(r)) / (lcs / len(p) + lcs / len(r))
    assert rouge_l(pred, ref) == pytest.approx(expected)


def test_rouge_l_rewards_order_where_token_f1_does_not() -> None:
    # Reversed words: the same bag (token F1 1) but an LCS of one word (P = R = 1/4).
    result = score("generation", ["d c b a"], ["a b c d"])
    assert result.score == 1.0  # headline token_f1
    assert result.get("rouge_l").score == pytest.approx(0.25)


def test_score_generation_reports_all_three_metrics_with_cis() -> None:
    preds = ["the capital is paris", "tokyo is big", "no idea"]
    refs = ["The capital is Paris.", "Tokyo.", "Rome"]
    result = score("generation", preds, refs)
    assert (result.metric, result.n, result.parse_rate) == ("token_f1", 3, None)
    assert set(result.metrics) == {"token_f1", "chrf", "rouge_l"}
    for s in result.metrics.values():
        assert 0.0 <= s.ci_low <= s.ci_high <= 1.0
    assert 0.0 < result.get("chrf").score < 1.0
