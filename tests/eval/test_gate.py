from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.gate_policy import GatePolicy
from eval.gate import BudgetCheck, choose_baseline, decide_gate
from eval.metrics import EvalResult, MetricScore, score

N = 20
LABELS = ["positive", "negative"]
REFERENCES = ["positive", "negative"] * (N // 2)


def accuracy(right: int) -> EvalResult:
    """Scored for real: the first `right` of 20 answers correct, the rest wrong."""
    flip = {"positive": "negative", "negative": "positive"}
    preds = [r if i < right else flip[r] for i, r in enumerate(REFERENCES)]
    return score("classification", preds, REFERENCES, LABELS)


def result(value: float, n: int = N, metric: str = "accuracy") -> EvalResult:
    return EvalResult(metric, value, n, max(value - 0.1, 0.0), min(value + 0.1, 1.0))


def test_an_improved_model_and_faithful_artifacts_pass() -> None:
    base, tuned = accuracy(8), accuracy(17)  # 0.40 -> 0.85
    artifacts = {"laptop-cpu": accuracy(17), "raspberry-pi-5": accuracy(16)}  # 0.85, 0.80
    decision = decide_gate(GatePolicy(min_score=0.7), base, tuned, artifacts, accuracy(10), accuracy(10))
    assert decision.passed, decision.reasons
    assert decision.reasons == [] and decision.metric == "accuracy"
    assert {a: v.passed for a, v in decision.artifacts.items()} == {
        "laptop-cpu": True,
        "raspberry-pi-5": True,
    }
    assert decision.artifacts["raspberry-pi-5"].drop == pytest.approx(0.05)
    assert {c.rule for c in decision.checks} == {
        "min_eval_rows",
        "min_score",
        "min_delta",
        "max_chance_p_value",
        "max_artifact_drop",
        "max_probe_drop",
    }
    assert all(c.passed for c in decision.checks)


@pytest.mark.parametrize(("base_right", "tuned_right"), [(12, 12), (14, 12)])
def test_a_model_no_better_than_base_fails_with_the_numbers(base_right: int, tuned_right: int) -> None:
    # min_delta alone (12 of 20 on two labels is no better than a guess either: tested below)
    decision = decide_gate(GatePolicy(max_chance_p_value=1), accuracy(base_right), accuracy(tuned_right), {})
    assert not decision.passed
    assert len(decision.reasons) == 1
    reason = decision.reasons[0]
    assert reason.startswith("min_delta:")
    assert f"{tuned_right / N:.3f}" in reason and f"{base_right / N:.3f}" in reason
    assert f"{(tuned_right - base_right) / N:+.3f}" in reason


def test_too_few_held_out_rows_refuse_and_say_why() -> None:
    """12 rows: one row is 0.083, more than the artifact tolerance; the gate will not judge."""
    decision = decide_gate(GatePolicy(), result(0.2, n=12), result(0.9, n=12), {})
    assert not decision.passed
    [reason] = decision.reasons
    assert reason.startswith("min_eval_rows: 12 held-out rows are fewer than the 20")
    assert "one row is 0.083" in reason and "+-0.28" in reason  # 1.96 * sqrt(0.25 / 12)
    assert decide_gate(GatePolicy(), result(0.2, n=20), result(0.9, n=20), {}).passed
    assert decide_gate(GatePolicy(min_eval_rows=0), result(0.2, n=12), result(0.9, n=12), {}).passed


def test_min_delta_names_the_baseline_it_compared_with() -> None:
    decision = decide_gate(GatePolicy(), result(0.6), result(0.55), {}, baseline="prompted base (4-shot)")
    [reason] = decision.reasons
    assert "minus prompted base (4-shot) 0.600 = -0.050" in reason
    note = decide_gate(GatePolicy(), result(0.6), result(0.65), {}, baseline="prompted base (4-shot)").notes
    assert any("beats prompted base (4-shot) on accuracy by 0.050" in n for n in note)
    assert GatePolicy().baseline == "best"
    with pytest.raises(ValidationError):
        GatePolicy.model_validate({"baseline": "few-shot"})


def prompted(value: float, shots: int = 8, metric: str = "accuracy") -> EvalResult:
    r = result(value, metric=metric)
    r.report["shots"] = shots
    return r


def test_best_baseline_is_the_higher_of_bare_and_prompted() -> None:
    # chat on SmolLM2-135M (docs/benchmarks.md): bare 0.313, prompted 0.184, fine-tuned 0.262
    bare, worse_prompted = result(0.313, metric="token_f1"), prompted(0.184, metric="token_f1")
    chosen, name, notes = choose_baseline("best", bare, worse_prompted, "token_f1")
    assert chosen is bare and name == "base"
    assert "bare base scored 0.313 on token_f1, above the prompted base (8-shot) 0.184" in notes[0]
    decision = decide_gate(GatePolicy(), chosen, result(0.262, metric="token_f1"), {}, baseline=name)
    assert not decision.passed
    assert "minus base 0.313 = -0.051" in decision.reasons[0]
    # the same rows, asked for the prompted base only: the fine-tune passes, as it did before
    chosen, name, notes = choose_baseline("prompted", bare, worse_prompted, "token_f1")
    assert chosen is worse_prompted and name == "prompted base (8-shot)" and notes == []
    assert decide_gate(GatePolicy(), chosen, result(0.262, metric="token_f1"), {}, baseline=name).passed


def test_best_baseline_keeps_the_prompted_base_when_it_is_as_good() -> None:
    for p in (0.6, 0.2):  # above the bare base, and tied with it
        chosen, name, notes = choose_baseline("best", result(0.2), prompted(p, shots=4), "accuracy")
        assert chosen.score == p and name == "prompted base (4-shot)" and notes == []
    chosen, name, notes = choose_baseline("bare", result(0.2), prompted(0.6), "accuracy")
    assert chosen.score == 0.2 and name == "base" and notes == []


def test_no_prompted_score_falls_back_to_the_bare_base_with_a_note() -> None:
    for want in ("best", "prompted"):
        chosen, name, notes = choose_baseline(want, result(0.3), None, "accuracy")
        assert chosen.score == 0.3 and name == "base"
        assert notes == [
            "no prompted-base score for this job: min_delta compared the fine-tune with the bare base"
        ]
    assert choose_baseline("bare", result(0.3), None, "accuracy")[2] == []


def test_min_delta_must_be_exceeded() -> None:
    # 0.7 - 0.6 is 0.09999999999999998 in floats: equal to 0.1, so not more than it.
    assert not decide_gate(GatePolicy(min_delta=0.1), result(0.6), result(0.7), {}).passed
    assert decide_gate(GatePolicy(min_delta=0.1), result(0.6), result(0.75), {}).passed


def test_a_negative_min_delta_allows_a_bounded_regression() -> None:
    policy = GatePolicy(min_delta=-0.05)
    assert decide_gate(policy, result(0.8), result(0.78), {}).passed
    assert not decide_gate(policy, result(0.8), result(0.7), {}).passed


def test_an_artifact_that_dropped_beyond_tolerance_fails_alone() -> None:
    base, tuned = accuracy(8), accuracy(17)  # 0.85
    artifacts = {"laptop-cpu": accuracy(17), "phone-android": accuracy(14)}  # 0.85, 0.70
    decision = decide_gate(GatePolicy(max_artifact_drop=0.05), base, tuned, artifacts)
    assert not decision.passed
    assert decision.artifacts["laptop-cpu"].passed
    verdict = decision.artifacts["phone-android"]
    assert not verdict.passed and verdict.score == pytest.approx(0.70) and verdict.drop == pytest.approx(0.15)
    assert decision.reasons == verdict.reasons
    assert verdict.reasons[0].startswith("max_artifact_drop: phone-android accuracy 0.700")
    assert "+0.150" in verdict.reasons[0] and "0.050" in verdict.reasons[0]


def test_an_artifact_exactly_at_tolerance_passes() -> None:
    # 0.75 - 0.70 is 0.05000000000000004 in floats.
    decision = decide_gate(
        GatePolicy(max_artifact_drop=0.05), result(0.5), result(0.75), {"mac": result(0.70)}
    )
    assert decision.passed, decision.reasons


def test_below_threshold_fails_even_when_better_than_base() -> None:
    decision = decide_gate(GatePolicy(min_score=0.9), accuracy(8), accuracy(16), {})
    assert not decision.passed
    assert decision.reasons == [
        "min_score: fine-tuned accuracy 0.800 "
        f"(95% CI {accuracy(16).ci_low:.3f}-{accuracy(16).ci_high:.3f}) is below the required 0.900"
    ]


def test_an_artifact_within_tolerance_but_below_threshold_fails() -> None:
    decision = decide_gate(
        GatePolicy(min_score=0.8, max_artifact_drop=0.05), result(0.5), result(0.82), {"mac": result(0.78)}
    )
    assert not decision.passed
    assert [r.split(":")[0] for r in decision.artifacts["mac"].reasons] == ["min_score"]


def test_general_ability_probe() -> None:
    policy = GatePolicy(max_probe_drop=0.05)
    base, tuned = result(0.5), result(0.9)
    kept = decide_gate(policy, base, tuned, {}, probe_base=result(0.60), probe_finetuned=result(0.57))
    assert kept.passed, kept.reasons
    forgot = decide_gate(policy, base, tuned, {}, probe_base=result(0.60), probe_finetuned=result(0.45))
    assert not forgot.passed
    assert forgot.reasons[0].startswith("max_probe_drop:") and "+0.150" in forgot.reasons[0]
    skipped = decide_gate(policy, base, tuned, {})
    assert skipped.passed and any("max_probe_drop was not checked" in n for n in skipped.notes)
    with pytest.raises(ValueError, match="both"):
        decide_gate(policy, base, tuned, {}, probe_base=result(0.6))


def test_gate_on_another_metric_of_the_results() -> None:
    # Tuned always answers "positive": accuracy 0.5 beats base's 0.4, but macro-F1 does not
    # (positive F1 2/3, negative F1 0 -> 1/3, against base's 0.4 on both classes).
    base = accuracy(8)
    tuned = score("classification", ["positive"] * N, REFERENCES, LABELS)
    assert decide_gate(GatePolicy(max_chance_p_value=1), base, tuned, {}).passed
    # by default the guess itself is refused on accuracy: 10 of 20 is what "positive" always scores
    refused = decide_gate(GatePolicy(), base, tuned, {})
    assert [r.split(":")[0] for r in refused.reasons] == ["max_chance_p_value"]
    decision = decide_gate(GatePolicy(metric="macro_f1", max_chance_p_value=1), base, tuned, {})
    assert not decision.passed and decision.metric == "macro_f1"
    assert "macro_f1 0.333 minus base 0.400" in decision.reasons[0]
    with pytest.raises(ValueError, match="no metric 'chrf'"):
        decide_gate(GatePolicy(metric="chrf"), base, tuned, {})


def test_a_narrow_improvement_gets_a_noise_note() -> None:
    tuned = EvalResult("accuracy", 0.55, N, 0.35, 0.75)  # half-width 0.2
    decision = decide_gate(GatePolicy(), result(0.5), tuned, {})
    assert decision.passed
    assert any("may not hold" in n for n in decision.notes)
    clear = decide_gate(GatePolicy(), result(0.2), tuned, {})
    assert not any("may not hold" in n for n in clear.notes)


def test_results_from_different_eval_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="row counts differ"):
        decide_gate(GatePolicy(), result(0.5, n=20), result(0.8, n=20), {"mac": result(0.8, n=19)})


def test_policy_validation() -> None:
    with pytest.raises(ValidationError):
        GatePolicy(min_score=1.5)
    with pytest.raises(ValidationError):
        GatePolicy(max_artifact_drop=-0.1)
    with pytest.raises(ValidationError):
        GatePolicy(min_scor=0.5)  # type: ignore[call-arg]


def test_decision_is_json_ready_and_round_trips_results() -> None:
    # The worker keeps results in the job's JSON state between the evaluate and export stages.
    tuned = EvalResult.from_dict(accuracy(17).to_dict())
    assert tuned == accuracy(17) and isinstance(tuned.get("macro_f1"), MetricScore)
    decision = decide_gate(GatePolicy(), accuracy(8), tuned, {"mac": accuracy(17)})
    assert decision.model_validate_json(decision.model_dump_json()) == decision


def _budget(budget: str, limit: float, measured: float | None, rule: str = "refuse") -> BudgetCheck:
    return BudgetCheck.model_validate(
        {"budget": budget, "limit": limit, "measured": measured, "rule": rule, "where": "host test-box"}
    )


def test_budgets_refuse_or_flag_by_the_profiles_rule() -> None:
    base, tuned = accuracy(8), accuracy(17)
    artifacts = {"phone": accuracy(17), "pi": accuracy(17)}
    budgets = {
        "phone": [
            _budget("max_artifact_mb", 100, 80.0),
            _budget("min_decode_tokens_per_s", 20, 12.5, "flag"),
        ],
        "pi": [_budget("max_ram_mb", 512, 700.0)],
        "gpu-server": [_budget("max_artifact_mb", 10, 4.0)],  # not run, held to its size only
    }
    decision = decide_gate(GatePolicy(), base, tuned, artifacts, budgets=budgets)
    assert not decision.passed
    (reason,) = decision.reasons
    assert reason == (
        "max_ram_mb: pi measured 700.0 MB (host test-box), over the budget of 512 "
        "(refused by the profile's rule)"
    )
    pi, phone, gpu = (decision.artifacts[k] for k in ("pi", "phone", "gpu-server"))
    assert not pi.passed and pi.reasons == [reason] and pi.score == 0.85
    assert phone.passed and phone.flags == [
        "min_decode_tokens_per_s: phone measured 12.5 tokens/s (host test-box), under the budget of 20 "
        "(flagged, not refused)"
    ]
    assert phone.flags[0] in decision.notes
    assert gpu.passed and gpu.score is None and gpu.drop is None
    flagged = [c for c in decision.checks if c.flagged]
    assert [(c.subject, c.rule, c.passed) for c in flagged] == [("phone", "min_decode_tokens_per_s", True)]


def test_a_budget_exactly_at_its_limit_passes_and_an_unmeasured_one_is_noted() -> None:
    budgets = {
        "phone": [
            _budget("max_artifact_mb", 100, 100.0),
            _budget("min_decode_tokens_per_s", 20, 20.0),
            _budget("max_ram_mb", 512, None),
        ]
    }
    decision = decide_gate(GatePolicy(), accuracy(8), accuracy(17), {"phone": accuracy(17)}, budgets=budgets)
    assert decision.passed, decision.reasons
    assert any("max_ram_mb of phone was not measured" in n for n in decision.notes)
    assert {c.rule for c in decision.checks if c.subject == "phone"} >= {
        "max_artifact_mb",
        "min_decode_tokens_per_s",
    }


def _scored(hits: list[bool]) -> EvalResult:
    """Classification results from real predictions: hits[i] says whether row i is answered right."""
    from eval.metrics import score

    refs = ["positive" if i % 2 else "negative" for i in range(len(hits))]
    wrong = {"positive": "negative", "negative": "positive"}
    preds = [r if h else wrong[r] for r, h in zip(refs, hits, strict=True)]
    return score("classification", preds, refs, ["positive", "negative"])


@pytest.mark.parametrize(
    ("lost", "gained", "passed"), [(2, 0, True), (3, 0, False), (3, 1, True), (4, 1, False)]
)
def test_an_artifacts_drop_is_judged_against_its_paired_noise(lost: int, gained: int, passed: bool) -> None:
    """20 rows, fine-tuned right on 17: two rows lost to quantization is 0.10, within the 0.05
    allowance widened by the drop's paired noise (capped at 0.05 more); three lost net is not."""
    tuned_hits = [True] * 17 + [False] * 3
    art_hits = list(tuned_hits)
    for i in range(lost):
        art_hits[i] = False  # rows fine-tuned got right, the artifact not
    for i in range(gained):
        art_hits[17 + i] = True  # rows the artifact got right and fine-tuned not
    tuned, art = _scored(tuned_hits), _scored(art_hits)
    assert len(tuned.per_item) == 20 and tuned.per_item[:2] == [1.0, 1.0]
    decision = decide_gate(GatePolicy(), result(0.5), tuned, {"q4": art})
    check = next(c for c in decision.checks if c.rule == "max_artifact_drop")
    assert check.passed is passed and decision.artifacts["q4"].passed is passed, check.detail
    assert "paired noise" in check.detail


def test_without_per_row_scores_the_point_rule_decides() -> None:
    """Results kept before per-row scores were stored (or a non-headline metric): no widening."""
    tuned, art = result(0.85), result(0.75)  # no per_item
    check = next(
        c
        for c in decide_gate(GatePolicy(), result(0.5), tuned, {"q4": art}).checks
        if c.rule == "max_artifact_drop"
    )
    assert not check.passed and "paired noise" not in check.detail


def test_an_artifact_of_another_base_is_held_to_that_bases_fine_tune() -> None:
    """A sweep over bases (worker/stages/sweep.py) may ship a smaller base's GGUF: its export is
    judged against the fine-tune it was made from, not the job's model, which may score higher
    (the smaller base's gap is no quantization loss) or lower (a larger gap would hide one)."""
    from eval.gate import fine_tune_reasons

    base, tuned, small_tuned = accuracy(8), accuracy(18), accuracy(15)  # 0.40, 0.90, 0.75
    small_gguf = {"raspberry-pi-5": accuracy(15)}  # no loss against its own fine-tune
    alone = decide_gate(GatePolicy(), base, tuned, small_gguf)
    assert not alone.passed and "max_artifact_drop: raspberry-pi-5" in alone.reasons[0]
    held = decide_gate(GatePolicy(), base, tuned, small_gguf, references={"raspberry-pi-5": small_tuned})
    assert held.passed, held.reasons
    assert held.artifacts["raspberry-pi-5"].drop == pytest.approx(0.0)
    lossy = decide_gate(GatePolicy(), base, accuracy(11), {"raspberry-pi-5": accuracy(11)},
                        references={"raspberry-pi-5": small_tuned})  # fmt: skip
    assert not lossy.artifacts[
        "raspberry-pi-5"
    ].passed  # 0.55 against its own 0.75, though equal to the job's
    # the other base's fine-tune itself, from an evaluate stage's stored results
    stored = {"base": base.to_dict(), "fine_tuned": small_tuned.to_dict(),
              "probe_base": accuracy(10).to_dict(), "probe_fine_tuned": accuracy(4).to_dict()}  # fmt: skip
    reasons = fine_tune_reasons(GatePolicy(), stored)
    assert len(reasons) == 1 and reasons[0].startswith("max_probe_drop"), reasons
    stored["probe_fine_tuned"] = accuracy(9).to_dict()
    assert fine_tune_reasons(GatePolicy(), stored) == []


@pytest.mark.parametrize(
    ("labels", "right", "passed"),
    [
        (4, 5, False),  # 0.25 on four balanced labels: a guess's score, though above a prompted base's 0.20
        (4, 8, False),  # p = 0.10
        (4, 9, True),  # p = 0.041
        (2, 14, False),  # p = 0.058
        (2, 15, True),  # p = 0.021
    ],
)
def test_a_classifier_must_beat_answering_the_commonest_label(labels: int, right: int, passed: bool) -> None:
    names = ["billing", "technical", "shipping", "account"][:labels]
    refs = [names[i % labels] for i in range(N)]
    preds = [r if i < right else names[(names.index(r) + 1) % labels] for i, r in enumerate(refs)]
    tuned = score("classification", preds, refs, names)
    prompted_base = score("classification", [names[0]] * 4 + [names[-1]] * 16, refs, names)  # 0.20 or 0.40
    decision = decide_gate(GatePolicy(min_delta=-1), prompted_base, tuned, {})
    check = next(c for c in decision.checks if c.rule == "max_chance_p_value")
    assert check.passed is passed and decision.passed is passed, decision.reasons
    assert f"({right} of {N}) against always answering {names[0]!r} ({1 / labels:.3f})" in check.detail
    # off at 1, and not a rule for scores that are not accuracies over labels
    assert "max_chance_p_value" not in {
        c.rule
        for c in decide_gate(GatePolicy(max_chance_p_value=1, min_delta=-1), prompted_base, tuned, {}).checks
    }
    f1 = result(0.1, metric="token_f1")
    assert "max_chance_p_value" not in {
        c.rule for c in decide_gate(GatePolicy(min_delta=-1), f1, f1, {}).checks
    }
