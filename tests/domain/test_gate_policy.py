from __future__ import annotations

from domain.gate_policy import GatePolicy, gate_refusing_nothing
from eval.gate import decide_gate
from eval.metrics import EvalResult, score

LABELS = ["a", "b", "c", "d"]
REFERENCES = LABELS * 2  # 8 held-out rows: under the default min_eval_rows


def _accuracy(right: int) -> EvalResult:
    """Scored for real: the first `right` answers correct, the rest another label."""
    wrong = {label: LABELS[(i + 1) % len(LABELS)] for i, label in enumerate(LABELS)}
    answers = [r if i < right else wrong[r] for i, r in enumerate(REFERENCES)]
    return score("classification", answers, REFERENCES, LABELS)


def test_the_gate_refusing_nothing_passes_the_worst_model() -> None:
    # a base right on 7 of 8 rows, a fine-tune and an artifact that get everything wrong, a probe
    # that falls from all to nothing, on too few rows: every rule a policy holds is failed, and none
    # refuses (min_delta's bound is -1 and the difference must exceed it: only a fine-tune that
    # loses every row of a perfect base is refused)
    policy = GatePolicy.model_validate(gate_refusing_nothing())
    decision = decide_gate(
        policy, _accuracy(7), _accuracy(0), {"laptop-cpu": _accuracy(0)}, _accuracy(8), _accuracy(0)
    )
    assert decision.passed, decision.reasons
    # and the same models are refused by the default policy, rule by rule
    refused = decide_gate(
        GatePolicy(), _accuracy(8), _accuracy(0), {"laptop-cpu": _accuracy(0)}, _accuracy(8), _accuracy(0)
    )
    failed = {c.rule for c in refused.checks if not c.passed}
    assert {"min_eval_rows", "min_delta", "max_chance_p_value", "max_probe_drop"} <= failed


def test_each_call_gives_a_fresh_policy() -> None:
    first = gate_refusing_nothing()
    first["min_delta"] = 0.5
    assert gate_refusing_nothing()["min_delta"] == -1.0
