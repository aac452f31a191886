"""A profile's budgets paired with an artifact's measurements (export/device_budgets.py)."""

from __future__ import annotations

from pathlib import Path

from eval.runtime_stats import RuntimeStats
from export.device_budgets import budget_checks
from export.profiles import get_profile


def _run_artifact(tmp_path: Path) -> tuple[Path, RuntimeStats]:
    """A 3 MB GGUF and its host figures: 40 MB peak, 25 decode tokens/s at context 4096."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"\0" * (3 * 2**20))
    stats = RuntimeStats(runtime="llama.cpp", context=4096, decode_tokens=50, decode_seconds=2.0)
    stats.peak_rss_growth_mb = 40.0
    return model, stats


def test_a_run_artifact_gets_all_three_budgets_labelled_with_the_host(tmp_path: Path) -> None:
    model, stats = _run_artifact(tmp_path)
    profile = get_profile("phone-android")
    checks = {c.budget: c for c in budget_checks(profile, [model], stats.to_dict())}
    assert checks["max_artifact_mb"].measured == 3.0 and checks["max_artifact_mb"].where == "artifact files"
    assert checks["max_artifact_mb"].limit == profile.max_artifact_mb
    assert checks["max_ram_mb"].measured == 40.0 and checks["max_ram_mb"].rule == "refuse"
    stats.peak_rss_growth_mb = 1.0  # a mapped file whose pages were not all touched
    small = {c.budget: c for c in budget_checks(profile, [model], stats.to_dict())}
    assert small["max_ram_mb"].measured == 3.0  # never below the file the device must hold
    speed = checks["min_decode_tokens_per_s"]
    assert speed.measured == 25.0 and speed.rule == "flag" and speed.limit == profile.min_decode_tokens_per_s
    assert speed.where == f"host {stats.host}, llama.cpp with its cache allocated for context 4096"


def test_an_artifact_that_is_not_run_is_held_to_its_size_only(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 1024)
    (check,) = budget_checks(get_profile("gpu-server"), [weights], None)
    assert check.budget == "max_artifact_mb" and check.within()


def test_a_device_agents_figures_replace_the_hosts_but_for_one_it_did_not_measure(tmp_path: Path) -> None:
    model, stats = _run_artifact(tmp_path)
    profile = get_profile("raspberry-pi-5")
    agent = {"peak_memory_mb": 55.0, "decode_tokens_per_s": 9.5, "measured_at": "device agent pi (arm)"}
    checks = {c.budget: c for c in budget_checks(profile, [model], stats.to_dict(), agent)}
    assert (checks["max_ram_mb"].measured, checks["max_ram_mb"].where) == (55.0, "device agent pi (arm)")
    assert checks["min_decode_tokens_per_s"].measured == 9.5
    # llama-bench gives no memory at the profile's context: that budget stays on the host's figure
    bench = {**agent, "peak_memory_mb": None}
    checks = {c.budget: c for c in budget_checks(profile, [model], stats.to_dict(), bench)}
    assert checks["max_ram_mb"].measured == 40.0 and checks["max_ram_mb"].where.startswith("host ")
    assert checks["min_decode_tokens_per_s"].where == "device agent pi (arm)"


def test_a_prefill_floor_is_judged_on_the_devices_figure_only(tmp_path: Path) -> None:
    """The host measures no prefill: without device figures the budget is left out, not guessed."""
    model, stats = _run_artifact(tmp_path)
    profile = get_profile("raspberry-pi-5").model_copy(update={"min_prefill_tokens_per_s": 100.0})
    host_only = {c.budget: c for c in budget_checks(profile, [model], stats.to_dict())}
    unmeasured = host_only["min_prefill_tokens_per_s"]  # the gate notes it as not checked
    assert unmeasured.measured is None and "measures no prefill" in unmeasured.where
    agent = {"decode_tokens_per_s": 9.5, "prefill_tokens_per_s": 80.0, "measured_at": "device agent pi"}
    checks = {c.budget: c for c in budget_checks(profile, [model], stats.to_dict(), agent)}
    prefill = checks["min_prefill_tokens_per_s"]
    assert (prefill.measured, prefill.limit, prefill.rule) == (80.0, 100.0, "flag") and not prefill.within()
    assert prefill.where == "device agent pi"
