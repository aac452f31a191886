"""export/selection.py: the best_within_budget pick judges each candidate on the device's figures
(an agent's, else the device model's), counts every budget, and breaks exact ties to the faster."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.profiles import get_profile
from export.selection import Candidate, candidate, pick

MB = 2**20


def _c(quant: str, score: float, tps: float | None, misses: list[str] | None = None) -> Candidate:
    return Candidate(
        quantization=quant, score=score, size_mb=1.0, decode_tokens_per_s=tps, peak_memory_mb=None,
        figures="predicted", misses=misses or [],
    )  # fmt: skip


def test_the_best_score_within_budget_wins_and_ties_go_to_the_faster() -> None:
    assert (
        pick([_c("Q8_0", 0.9, 10.0, ["max_ram_mb 3000 vs 2048"]), _c("Q4_0", 0.7, 30.0)]).quantization
        == "Q4_0"
    )
    assert (
        pick([_c("Q8_0", 0.8, 10.0), _c("Q5_K_M", 0.8, 14.0), _c("Q4_0", 0.6, 30.0)]).quantization == "Q5_K_M"
    )
    assert pick([_c("Q8_0", 0.9, 10.0, ["x"]), _c("Q4_0", 0.7, 3.0, ["y"])]) is None


def _entry(tmp_path: Path, size_mb: float, **figures: object) -> dict[str, object]:
    f = tmp_path / f"model-{size_mb}.gguf"
    with f.open("wb") as fh:
        fh.truncate(int(size_mb * MB))  # sparse: the size is what counts
    return {"files": [str(f)], "eval": {"score": 0.5}, **figures}


def test_a_candidate_is_judged_on_the_agent_figures_else_the_prediction(tmp_path: Path) -> None:
    pi = get_profile("raspberry-pi-5")  # max 1024 MB, RAM 2048 MB, at least 5 tokens/s
    host = {
        "runtime_stats": {"decode_tokens_per_s": 100.0, "peak_rss_growth_mb": 100.0, "measured_at": "host"}
    }
    slow_device = {"device_stats": {"decode_tokens_per_s": 3.0, "peak_memory_mb": 500.0, "measured_at": "pi"}}
    predicted = {
        "device_prediction": {"decode_tokens_per_s": 8.0, "peak_memory_mb": 2500.0, "basis": "17.1 GB/s"}
    }
    measured = candidate(pi, "Q8_0", _entry(tmp_path, 1, **host, **slow_device, **predicted))
    assert measured.figures == "device agent" and measured.misses == ["min_decode_tokens_per_s 3 vs 5"]
    guessed = candidate(pi, "Q8_0", _entry(tmp_path, 1, **host, **predicted))
    # the host's 100 tokens/s does not count: the device model says 8, and 2500 MB is over 2048
    assert guessed.figures == "predicted" and guessed.misses == ["max_ram_mb 2500 vs 2048"]
    assert guessed.decode_tokens_per_s == 8.0


def test_a_flagged_budget_still_rules_a_candidate_out(tmp_path: Path) -> None:
    """Speed only flags at the gate, but the sweep has alternatives: a slow candidate is not chosen."""
    pi = get_profile("raspberry-pi-5")
    assert pi.on_over_budget.min_decode_tokens_per_s == "flag"
    slow = candidate(
        pi, "Q8_0", _entry(tmp_path, 1, device_prediction={"decode_tokens_per_s": 4.0, "basis": "b"})
    )
    quick = candidate(
        pi, "Q4_0", _entry(tmp_path, 1, device_prediction={"decode_tokens_per_s": 9.0, "basis": "b"})
    )
    assert not slow.within_budget and pick([slow, quick]) == quick


def test_size_counts_from_the_files(tmp_path: Path) -> None:
    c = candidate(get_profile("raspberry-pi-5"), "Q8_0", _entry(tmp_path, 1100))
    assert c.size_mb == pytest.approx(1100) and c.misses == ["max_artifact_mb 1100 vs 1024"]


def test_a_target_s_own_budgets_replace_the_profile_s_in_the_pick(tmp_path: Path) -> None:
    """TargetBudgets (the customer's limits) through export/profiles.py target_profile: a prefill
    floor the prediction misses, and a size ceiling tighter than the profile's."""
    from domain.job_config import JobConfig
    from export.profiles import target_profile

    own = {"min_prefill_tokens_per_s": 120.0, "max_artifact_mb": 2.0}
    cfg = JobConfig(
        model="m",
        training_file="file-x",
        targets=["laptop-cpu", {"profile": "raspberry-pi-5", "select": "best_within_budget", "budgets": own}],
    )
    pi = target_profile(cfg, "raspberry-pi-5")
    assert (pi.min_prefill_tokens_per_s, pi.max_artifact_mb) == (120.0, 2.0)
    assert pi.max_ram_mb == get_profile("raspberry-pi-5").max_ram_mb  # what it does not set stays
    assert target_profile(cfg, "laptop-cpu") == get_profile("laptop-cpu")
    figures = {"device_prediction": {"decode_tokens_per_s": 9.0, "prefill_tokens_per_s": 100.0, "basis": "b"}}
    big, small = (
        candidate(pi, "Q8_0", _entry(tmp_path, 3, **figures)),
        candidate(pi, "Q4_0", _entry(tmp_path, 1)),
    )
    assert big.misses == ["max_artifact_mb 3 vs 2", "min_prefill_tokens_per_s 100 vs 120"]
    assert big.prefill_tokens_per_s == 100.0 and pick([big, small]) == small
