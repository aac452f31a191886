"""The eval gate: may this fine-tune and its device artifacts be published?

`decide_gate(policy, base, finetuned, artifacts)` applies these rules to results scored on the same
held-out rows with the same greedy decoding:

1. min_score          fine-tuned, and every artifact, score at least `min_score`.
2. min_delta          fine-tuned minus base is more than `min_delta` (0: strictly better than base).
                      "Base" is the policy's `baseline` (`choose_baseline`): by default the
                      better of the base *prompted* for the task (its instruction and k training
                      examples, eval/prompting.py) and the bare base. A base never told the task
                      scores ~0 and beating it proves little; but k examples can also make a
                      small base worse (on chat, SmolLM2-135M fell from 0.313 bare to 0.184
                      prompted), and a fine-tune below the bare base has not added anything.
                      The caller (worker/stages/gate.py) passes the chosen result and names it.
3. max_artifact_drop  each artifact scores at least fine-tuned minus `max_artifact_drop`, widened
                      by the drop's paired noise (below) at most to twice that.
4. budgets            each artifact's device budgets (size, runtime memory, decode speed) from its
                      profile, measured when it was scored; a miss fails the gate where the
                      profile's rule is `refuse` and is flagged (published, marked) where it is
                      `flag`. Memory and speed are host measurements, and every detail says so.
5. min_eval_rows      the held-out set has at least `min_eval_rows` rows. Fewer, and the gate cannot
                      tell a result from noise, so it says so and refuses rather than passing.
6. max_chance_p_value a classification fine-tune beats answering the commonest held-out label
                      every time: the one-sided binomial p-value of its hits at that label's
                      share is below `max_chance_p_value`. min_delta compares two scores that may
                      both be chance (a prompted base and a fine-tune that learned nothing);
                      this one compares with what a guess is known to score.
7. max_probe_drop     a general-ability probe drops by at most `max_probe_drop` (forgetting). The
                      probe (eval/probe.py) is 64 fixed short questions a small instruct model
                      should keep answering after a narrow fine-tune (arithmetic, capitals, yes/no,
                      one-word answers, copy/transform), scored by `answer_match` for base and
                      fine-tuned alike; the drop is base minus fine-tuned.

Point estimates, not CI bounds, decide. The rows are few (a few dozen), so a 95% CI is wide: with
32 rows and 70% accuracy it spans about 0.54-0.86. Requiring fine-tuned's lower bound to clear
base's upper bound would fail nearly every honest improvement, and requiring an artifact's upper
bound to reach fine-tuned would pass almost any quantization. More to the point, base, fine-tuned
and artifacts answer the *same* rows, so the row-sampling noise those CIs measure is shared and
cancels in part in their differences (for an artifact against its own checkpoint, which get the
same rows right, almost entirely); adding up separate CIs overstates the noise of a delta.
The CIs are still reported in every check, and a note says when a margin is smaller than the CI
half-width, for a human to read before trusting a narrow pass. The one paired test: an artifact's
drop is measured on the same rows as its checkpoint, so its standard error comes from the per-row
differences (EvalResult.per_item); quantization flipping two rows of twenty one way is within it,
and the allowance grows by 1.645 of those standard errors, never past twice max_artifact_drop
(on 20 rows lost by the artifact and none gained: two pass, three fail).

Comparisons allow 1e-9 of float slack: scores are means of 0/1 rows, and 0.7 - 0.6 is
0.09999999999999998 in floating point.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from domain.gate_policy import GatePolicy
from domain.lists import BUDGET_UNITS, BudgetName
from eval.metrics import EvalResult, MetricScore, binomial_tail

EPS = 1e-9


class BudgetCheck(BaseModel):
    """One device budget of one artifact and what was measured (export/device_budgets.py builds them)."""

    budget: BudgetName
    limit: float
    measured: float | None  # None: could not be measured here (e.g. no /proc for memory)
    rule: Literal["refuse", "flag"]
    where: str  # "artifact files", or the host and runtime it was measured on

    def within(self) -> bool:
        assert self.measured is not None
        if self.budget.startswith("max_"):
            return self.measured <= self.limit + EPS
        return self.measured >= self.limit - EPS


class GateCheck(BaseModel):
    # "min_score", "min_delta", "max_chance_p_value", "max_artifact_drop", "max_probe_drop" or a
    # budget's name
    rule: str
    subject: str  # "fine-tuned", an artifact's name, or "probe"
    passed: bool
    detail: str  # the numbers, in words
    flagged: bool = False  # a budget missed under the `flag` rule: passed, and marked


class ArtifactVerdict(BaseModel):
    passed: bool
    score: float | None  # None for an artifact that is not scored in a runtime (merged safetensors)
    drop: float | None  # fine-tuned minus artifact; negative when the artifact scored higher
    reasons: list[str]  # its failing checks' details
    flags: list[str] = Field(default_factory=list)  # budgets it missed under the `flag` rule


class GateDecision(BaseModel):
    passed: bool
    metric: str
    reasons: list[str]  # one line per failing check, with its numbers; empty when passed
    checks: list[GateCheck]  # every check made, passing ones too
    artifacts: dict[str, ArtifactVerdict]
    notes: list[str]  # advisories: margins within CI noise, checks not made


def _fmt(s: MetricScore) -> str:
    return f"{s.score:.3f} (95% CI {s.ci_low:.3f}-{s.ci_high:.3f})"


def _min_score(policy: GatePolicy, metric: str, subject: str, s: MetricScore) -> GateCheck:
    ok = s.score >= policy.min_score - EPS
    verb = "meets" if ok else "is below"
    detail = f"min_score: {subject} {metric} {_fmt(s)} {verb} the required {policy.min_score:.3f}"
    return GateCheck(rule="min_score", subject=subject, passed=ok, detail=detail)


def choose_baseline(
    want: str, bare: EvalResult, prompted: EvalResult | None, metric: str
) -> tuple[EvalResult, str, list[str]]:
    """The result min_delta compares with, its name in the verdict, and notes.

    `want` is the policy's `baseline`: "best" takes the higher of the prompted and the bare base on
    `metric` (the prompted one on a tie: it is the bar the report names); "prompted" the prompted
    base; "bare" the bare one. Without a prompted score (DPO, a job evaluated before it existed)
    every choice falls back to the bare base, with a note when a prompted one was asked for."""
    if prompted is None:
        note = "no prompted-base score for this job: min_delta compared the fine-tune with the bare base"
        return bare, "base", [note] if want != "bare" else []
    named = f"prompted base ({prompted.report.get('shots')}-shot)"
    if want == "bare":
        return bare, "base", []
    bare_score, prompted_score = bare.get(metric).score, prompted.get(metric).score
    if want == "best" and bare_score > prompted_score + EPS:
        note = (
            f"the bare base scored {bare_score:.3f} on {metric}, above the {named} {prompted_score:.3f}: "
            "its examples made it worse, so min_delta compared the fine-tune with the bare base, "
            "the higher bar"
        )
        return bare, "base", [note]
    return prompted, named, []


def _min_delta(
    policy: GatePolicy, metric: str, base: MetricScore, tuned: MetricScore, baseline: str
) -> GateCheck:
    delta = tuned.score - base.score
    ok = delta > policy.min_delta + EPS
    verb = "is more than" if ok else "is not more than"
    detail = (
        f"min_delta: fine-tuned {metric} {tuned.score:.3f} minus {baseline} {base.score:.3f} = {delta:+.3f}, "
        f"which {verb} the required {policy.min_delta:+.3f}"
    )
    return GateCheck(rule="min_delta", subject="fine-tuned", passed=ok, detail=detail)


# One-sided 95% normal quantile: an artifact is refused when its drop exceeds the allowance by more
# than this many paired standard errors (the allowance widened at most to twice max_artifact_drop).
Z_ONE_SIDED_95 = 1.645


def paired_drop_noise(finetuned: EvalResult, artifact: EvalResult, metric: str) -> float:
    """Standard error of the fine-tune-minus-artifact drop on the same rows, from their per-row
    scores: sd(d_i) / sqrt(n) with d_i = tuned_i - artifact_i. 0 when the rows' scores are not
    there (another metric than the headline, results stored before they were kept)."""
    a, b = finetuned.per_item, artifact.per_item
    if metric != finetuned.metric or metric != artifact.metric or len(a) != len(b) or len(a) < 2:
        return 0.0
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / len(d)
    variance = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return float((variance / len(d)) ** 0.5)


def _artifact_drop(
    policy: GatePolicy, metric: str, name: str, tuned: MetricScore, art: MetricScore, noise: float = 0.0
) -> GateCheck:
    """Quantization flips a few rows either way: on 20 rows one row is 0.05, the default allowance,
    so a point rule refuses an artifact for two rows of noise. The allowance is widened by the
    drop's paired noise (Z_ONE_SIDED_95 standard errors, at most one more max_artifact_drop): an
    artifact is refused when it is worse than allowed beyond what its rows can tell apart."""
    drop = tuned.score - art.score
    widened = min(Z_ONE_SIDED_95 * noise, policy.max_artifact_drop)
    ok = drop <= policy.max_artifact_drop + widened + EPS
    verb = "within" if ok else "more than"
    allowed = f"the allowed {policy.max_artifact_drop:.3f}"
    if widened > EPS:
        allowed += f" + {widened:.3f} of paired noise (1.645 x standard error {noise:.3f} of the drop)"
    detail = (
        f"max_artifact_drop: {name} {metric} {_fmt(art)} against fine-tuned {tuned.score:.3f} is a drop "
        f"of {drop:+.3f}, {verb} {allowed}"
    )
    return GateCheck(rule="max_artifact_drop", subject=name, passed=ok, detail=detail)


def _above_chance(policy: GatePolicy, metric: str, tuned: EvalResult) -> list[GateCheck]:
    """max_chance_p_value, for an accuracy with its per-class support (classification); none for
    other metrics or with the check off (1)."""
    classes = tuned.report.get("per_class") or {}
    if metric != "accuracy" or tuned.metric != "accuracy" or not classes or not tuned.n:
        return []
    if policy.max_chance_p_value >= 1:
        return []
    commonest = max(classes.items(), key=lambda kv: kv[1]["support"])
    share = commonest[1]["support"] / tuned.n
    hits = round(tuned.score * tuned.n)
    p_value = binomial_tail(hits, tuned.n, share)
    ok = p_value < policy.max_chance_p_value
    detail = (
        f"max_chance_p_value: fine-tuned accuracy {tuned.score:.3f} ({hits} of {tuned.n}) against always "
        f"answering {commonest[0]!r} ({share:.3f}): p = {p_value:.3f}, "
        + ("below" if ok else "not below")
        + f" the required {policy.max_chance_p_value:.3f}"
        + ("" if ok else ": it cannot be told from a guess")
    )
    return [GateCheck(rule="max_chance_p_value", subject="fine-tuned", passed=ok, detail=detail)]


def _probe_drop(policy: GatePolicy, probe_base: EvalResult, probe_tuned: EvalResult) -> GateCheck:
    drop = probe_base.get(probe_tuned.metric).score - probe_tuned.score
    ok = drop <= policy.max_probe_drop + EPS
    verb = "within" if ok else "more than"
    detail = (
        f"max_probe_drop: general-ability probe {probe_tuned.metric} went from {probe_base.score:.3f} "
        f"(base) to {probe_tuned.score:.3f} (fine-tuned), a drop of {drop:+.3f}, {verb} the allowed "
        f"{policy.max_probe_drop:.3f}"
    ) + _items_moved(probe_base, probe_tuned)
    return GateCheck(rule="max_probe_drop", subject="probe", passed=ok, detail=detail)


def _items_moved(probe_base: EvalResult, probe_tuned: EvalResult) -> str:
    """The drop item by item, for a reader judging it against noise: items the base got and the
    fine-tune lost, items gained, and the drop's paired standard error (paired_drop_noise). On
    SmolLM2-135M a base's right answer is partly luck (it says "No" to every yes/no item), so a
    drop of 7 net items may be 8 lost and 1 gained or 10 and 3 (docs/benchmarks.md). The rule
    itself stays a point rule: with 64 items, widening it by its noise as max_artifact_drop does
    would let a drop of a third through. Empty where the items' scores were not kept."""
    a, b = probe_base.per_item, probe_tuned.per_item
    if len(a) != len(b) or not a:
        return ""
    lost = sum(x > y for x, y in zip(a, b, strict=True))
    gained = sum(y > x for x, y in zip(a, b, strict=True))
    noise = paired_drop_noise(probe_base, probe_tuned, probe_tuned.metric)
    return f" ({lost} of {len(a)} items lost, {gained} gained; standard error of the drop {noise:.3f})"


def _budget_check(name: str, b: BudgetCheck) -> GateCheck:
    unit = BUDGET_UNITS[b.budget]
    assert b.measured is not None
    ok = b.within()
    side = "within" if ok else ("over" if b.budget.startswith("max_") else "under")
    detail = (
        f"{b.budget}: {name} measured {b.measured:.1f} {unit} ({b.where}), {side} the budget of {b.limit:g}"
    )
    if not ok:
        detail += " (refused by the profile's rule)" if b.rule == "refuse" else " (flagged, not refused)"
    return GateCheck(
        rule=b.budget,
        subject=name,
        passed=ok or b.rule == "flag",
        detail=detail,
        flagged=not ok and b.rule == "flag",
    )


def _budget_checks(budgets: dict[str, list[BudgetCheck]]) -> tuple[list[GateCheck], list[str]]:
    checks, notes = [], []
    for name, items in budgets.items():
        for b in items:
            if b.measured is None:
                notes.append(f"{b.budget} of {name} was not measured on this host ({b.where}); not checked")
            else:
                checks.append(_budget_check(name, b))
    return checks, notes


def _eval_rows(policy: GatePolicy, n: int) -> GateCheck:
    ok = n >= policy.min_eval_rows
    detail = (
        f"min_eval_rows: {n} held-out rows "
        + ("meet" if ok else "are fewer than")
        + f" the {policy.min_eval_rows} the gate needs to tell a result from noise"
    )
    if not ok and n:
        half = 1.96 * (0.25 / n) ** 0.5  # the 95% CI half-width of a 0.5 accuracy on n rows
        detail += f" (at {n} rows one row is {1 / n:.3f} and a 95% CI spans about +-{half:.2f})"
    return GateCheck(rule="min_eval_rows", subject="held-out set", passed=ok, detail=detail)


def _noise_note(metric: str, base: MetricScore, tuned: MetricScore, n: int, baseline: str) -> list[str]:
    delta, half_width = tuned.score - base.score, (tuned.ci_high - tuned.ci_low) / 2
    if 0 < delta < half_width:
        return [
            f"fine-tuned beats {baseline} on {metric} by {delta:.3f}, less than the 95% CI half-width "
            f"{half_width:.3f} on {n} rows: the improvement may not hold on new data"
        ]
    return []


def _check_same_rows(base: EvalResult, finetuned: EvalResult, artifacts: dict[str, EvalResult]) -> None:
    # Every comparison assumes one eval set; different row counts mean a wiring bug, not a result.
    counts = {"base": base.n, "fine-tuned": finetuned.n, **{k: v.n for k, v in artifacts.items()}}
    if len(set(counts.values())) > 1:
        raise ValueError(f"results must come from the same eval rows; row counts differ: {counts}")


def _artifact_verdict(
    policy: GatePolicy, metric: str, name: str, tuned: MetricScore, art: MetricScore, noise: float = 0.0
) -> tuple[ArtifactVerdict, list[GateCheck]]:
    checks = [_artifact_drop(policy, metric, name, tuned, art, noise), _min_score(policy, metric, name, art)]
    reasons = [c.detail for c in checks if not c.passed]
    verdict = ArtifactVerdict(
        passed=not reasons, score=art.score, drop=tuned.score - art.score, reasons=reasons
    )
    return verdict, checks


def _add_budgets(verdicts: dict[str, ArtifactVerdict], budget_checks: list[GateCheck]) -> None:
    """Fold each artifact's budget checks into its verdict (creating one for an unscored artifact)."""
    for c in budget_checks:
        v = verdicts.setdefault(c.subject, ArtifactVerdict(passed=True, score=None, drop=None, reasons=[]))
        if not c.passed:
            v.passed = False
            v.reasons.append(c.detail)
        elif c.flagged:
            v.flags.append(c.detail)


def decide_gate(
    policy: GatePolicy,
    base: EvalResult,
    finetuned: EvalResult,
    artifacts: dict[str, EvalResult],
    probe_base: EvalResult | None = None,
    probe_finetuned: EvalResult | None = None,
    budgets: dict[str, list[BudgetCheck]] | None = None,
    *,
    baseline: str = "base",
    references: dict[str, EvalResult] | None = None,
) -> GateDecision:
    """Apply `policy` (rules in the module docstring) and say why, with the numbers.

    Args:
        artifacts (`dict[str, EvalResult]`): each exported artifact scored in its own runtime, by
            name (the device target); may be empty when no target is scored.
        probe_base, probe_finetuned (`EvalResult`, *optional*): a general-ability eval of base and
            fine-tuned; both or neither. Without them max_probe_drop is not checked (and a note says so).
        budgets (`dict[str, list[BudgetCheck]]`, *optional*): each artifact's device budgets with
            what was measured; an artifact here need not be in `artifacts` (e.g. merged safetensors).
        baseline (`str`): what `base` is, in the verdict's words: "base", or "prompted base" when
            the caller passes the base prompted for the task (the policy's `baseline`).
        references (`dict[str, EvalResult]`, *optional*): for an artifact made from another
            fine-tune than `finetuned` (a sweep's other base), that fine-tune's result, by the
            artifact's name: max_artifact_drop measures what its export lost, not the base's gap.

    Raises:
        ValueError: results from different row counts, a policy metric a result lacks, one probe only.
    """
    if (probe_base is None) != (probe_finetuned is None):
        raise ValueError("give both probe_base and probe_finetuned, or neither")
    _check_same_rows(base, finetuned, artifacts)
    metric = policy.metric or finetuned.metric
    tuned = finetuned.get(metric)
    checks = [
        _eval_rows(policy, finetuned.n),
        _min_score(policy, metric, "fine-tuned", tuned),
        _min_delta(policy, metric, base.get(metric), tuned, baseline),
        *_above_chance(policy, metric, finetuned),
    ]
    verdicts = {}
    for name, result in artifacts.items():
        source = (references or {}).get(name, finetuned)
        _check_same_rows(base, source, {name: result})
        noise = paired_drop_noise(source, result, metric)
        verdicts[name], artifact_checks = _artifact_verdict(
            policy, metric, name, source.get(metric), result.get(metric), noise
        )
        checks += artifact_checks
    budget_checks, notes = _budget_checks(budgets or {})
    checks += budget_checks
    _add_budgets(verdicts, budget_checks)
    notes += _noise_note(metric, base.get(metric), tuned, finetuned.n, baseline)
    notes += [c.detail for c in budget_checks if c.flagged]
    if probe_base is not None and probe_finetuned is not None:
        checks.append(_probe_drop(policy, probe_base, probe_finetuned))
    else:
        notes.append("no general-ability probe was run: max_probe_drop was not checked")
    reasons = [c.detail for c in checks if not c.passed]
    return GateDecision(
        passed=not reasons, metric=metric, reasons=reasons, checks=checks, artifacts=verdicts, notes=notes
    )


def model_inputs(
    policy: GatePolicy, results: dict[str, dict[str, Any]]
) -> tuple[EvalResult, EvalResult, dict[str, EvalResult], str, list[str]]:
    """From an evaluate stage's results (by name, as stored): the baseline min_delta compares
    with, the fine-tune, the probes (both or none), the baseline's name and its notes."""
    probes: dict[str, EvalResult] = {
        k: EvalResult.from_dict(results[k]) for k in ("probe_base", "probe_fine_tuned") if k in results
    }
    fine_tuned = EvalResult.from_dict(results["fine_tuned"])
    prompted = EvalResult.from_dict(results["base_prompted"]) if "base_prompted" in results else None
    base, baseline, notes = choose_baseline(
        policy.baseline, EvalResult.from_dict(results["base"]), prompted, policy.metric or fine_tuned.metric
    )
    return base, fine_tuned, probes, baseline, notes


def fine_tune_reasons(policy: GatePolicy, results: dict[str, dict[str, Any]]) -> list[str]:
    """Why the gate would refuse this fine-tune itself (score, gain over its baseline, forgetting),
    before any artifact: a sweep does not choose an artifact of a base whose fine-tune fails."""
    base, fine_tuned, probes, baseline, _ = model_inputs(policy, results)
    decision = decide_gate(
        policy,
        base,
        fine_tuned,
        {},
        probes.get("probe_base"),
        probes.get("probe_fine_tuned"),
        baseline=baseline,
    )
    return decision.reasons
