"""best_within_budget (issue 18 item 3): a job's target sweeps Q8_0 down to Q4_0, scores each in
llama.cpp on the held-out rows, judges each on the device's figures, and ships the best one within
every budget; a candidate over budget is never chosen, and when none fits nothing is published."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from domain.lists import SWEEP_QUANTIZATIONS
from export.selection import Candidate, pick
from infra.db import session_scope
from infra.models import Job
from tests.conftest import _reset_caches
from tests.worker.test_device_figures import _export_job, running_agent

pytestmark = pytest.mark.slow
PI = {  # raspberry-pi-5's shape, with size budgets that split the tiny model's sweep
    "description": "test", "format": "gguf", "quantization": "Q4_0", "context_cap": 4096,
    "min_ram_mb": 4096, "max_ram_mb": 2048, "min_decode_tokens_per_s": 5, "runtime": "llama.cpp",
    "memory_bandwidth_gbps": 17.1, "compute_gops": 614,
}  # fmt: skip


@pytest.fixture()
def profiles(platform, tmp_path) -> Iterator[None]:
    """Three Pi-like profiles: room for every candidate, room under Q8_0's 4 MB only, none."""
    path = tmp_path / "profiles.yaml"
    sizes = {"pi-roomy": 1024, "pi-tight": 3, "pi-none": 1}
    path.write_text(yaml.safe_dump({name: PI | {"max_artifact_mb": mb} for name, mb in sizes.items()}))
    os.environ["EDGETUNE_PROFILES"] = str(path)
    _reset_caches()
    yield
    os.environ.pop("EDGETUNE_PROFILES")
    _reset_caches()


def _sweep_job(
    api_key: str, model: str, tmp_path: Path, targets: list[str], budgets: dict[str, float] | None = None
) -> str:
    job_id = _export_job(api_key, model, tmp_path)
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        job.config = job.config | {
            "targets": [{"profile": t, "select": "best_within_budget", "budgets": budgets} for t in targets]
        }
    return job_id


def _run(job_id: str) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    from worker.pipeline import run_job
    from worker.stages.export import export

    run_job(job_id, stages=[("export", export)])
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        return job.status, job.error, dict(job.state)


def test_each_profiles_agent_measures_its_sweep_and_the_picks_differ(
    server, api_key, tiny_base, tmp_path, profiles
) -> None:
    """Two agents on this machine, one per profile, the tight profile's throttled to one thread:
    every candidate is judged on its agent's figures, and each target ships its own best."""
    job_id = _sweep_job(api_key, tiny_base, tmp_path, ["pi-roomy", "pi-tight"])
    with (
        running_agent(server, api_key, "roomy-1", "pi-roomy", threads=2),
        running_agent(server, api_key, "tight-1", "pi-tight", threads=1),
    ):
        status, error, state = _run(job_id)
    assert error is None, error
    picks = {t: state["exported"][t]["selection"]["chosen"] for t in ("pi-roomy", "pi-tight")}
    # Q8_0 scores highest on these rows (0.667 against 0.5 measured) but is over pi-tight's 3 MB
    assert picks["pi-roomy"] != picks["pi-tight"], picks
    for target, agent_name in (("pi-roomy", "roomy-1"), ("pi-tight", "tight-1")):
        device = state["exported"][target]["device_stats"]
        assert device["agent_name"] == agent_name and device["threads"] == (2 if target == "pi-roomy" else 1)
    for target in ("pi-roomy", "pi-tight"):
        entry = state["exported"][target]
        frontier = [
            Candidate(**{k: v for k, v in c.items() if k != "within_budget"}) for c in entry["frontier"]
        ]
        assert [c.quantization for c in frontier] == list(SWEEP_QUANTIZATIONS)
        assert all(c.figures == "device agent" and c.decode_tokens_per_s for c in frontier)
        chosen = [c for c in frontier if c.chosen]
        assert len(chosen) == 1 and chosen[0].within_budget
        expected = pick([c.model_copy(update={"chosen": False}) for c in frontier])
        assert expected is not None and chosen[0].quantization == expected.quantization
        assert entry["selection"]["chosen"] == chosen[0].quantization
        assert Path(entry["files"][0]).name == f"model-{chosen[0].quantization}.gguf"
    tight = {c["quantization"]: c for c in state["exported"]["pi-tight"]["frontier"]}
    assert tight["Q8_0"]["misses"] and tight["Q8_0"]["misses"][0].startswith("max_artifact_mb ")
    assert not tight["Q8_0"]["chosen"] and tight["Q4_0"]["within_budget"]


def test_when_no_candidate_fits_the_job_fails_naming_the_target(
    api_key, tiny_base, tmp_path, profiles
) -> None:
    status, error, state = _run(_sweep_job(api_key, tiny_base, tmp_path, ["pi-roomy", "pi-none"]))
    assert status == "failed" and error is not None
    assert error["code"] == "export_failed" and error["param"] == "targets[1]"
    assert error["message"].startswith(
        "pi-none: no quantization of the sweep meets its budgets on the device"
    )
    assert all(q in error["message"] for q in SWEEP_QUANTIZATIONS)
    assert "pi-none" not in (state.get("exported") or {})


def test_a_targets_own_budgets_steer_the_pick_and_a_prefill_floor_counts(
    api_key, tiny_base, tmp_path, profiles
) -> None:
    """The customer's own limits on the roomy profile (TargetBudgets): a 3 MB ceiling rules Q8_0
    out as pi-tight's does; a prefill floor above what the device model predicts for every
    candidate leaves none to publish, and the failure names that budget."""
    status, error, state = _run(
        _sweep_job(api_key, tiny_base, tmp_path, ["pi-roomy"], {"max_artifact_mb": 3})
    )
    assert error is None, error
    frontier = {c["quantization"]: c for c in state["exported"]["pi-roomy"]["frontier"]}
    assert frontier["Q8_0"]["misses"][0].startswith("max_artifact_mb ") and not frontier["Q8_0"]["chosen"]
    assert all(c["figures"] == "predicted" and c["prefill_tokens_per_s"] for c in frontier.values())
    floor = 10 * max(c["prefill_tokens_per_s"] for c in frontier.values())
    status, error, _ = _run(
        _sweep_job(api_key, tiny_base, tmp_path, ["pi-roomy"], {"min_prefill_tokens_per_s": floor})
    )
    assert status == "failed" and error is not None and error["param"] == "targets[0]"
    assert error["message"].count("min_prefill_tokens_per_s") == len(SWEEP_QUANTIZATIONS)


def _result(score: float, n: int = 20) -> dict[str, Any]:
    from eval.metrics import EvalResult

    return EvalResult("accuracy", score, n, max(score - 0.2, 0.0), min(score + 0.2, 1.0)).to_dict()


def _two_base_job(
    api_key: str, model: str, other: str, tmp_path: Path, budgets: dict[str, float], probe_after: float
) -> str:
    """A job at its export stage whose sweep may also ship `other`, as if the train and evaluate
    stages had fine-tuned it (each "fine-tune" is its base) and scored it: its probe falls
    0.5 -> `probe_after`."""
    from infra.settings import get_settings

    job_id = _sweep_job(api_key, model, tmp_path, ["pi-roomy"], budgets)
    other_dir = str(get_settings().models_dir / other)
    results = {
        "base": _result(0.2), "base_prompted": _result(0.3), "fine_tuned": _result(0.9),
        "probe_base": _result(0.5, 32), "probe_fine_tuned": _result(probe_after, 32),
    }  # fmt: skip
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        job.config = job.config | {"targets": [job.config["targets"][0] | {"models": [other]}]}
        job.state = job.state | {
            "other_bases": {
                other: {
                    "base_model_dir": other_dir,
                    "merged_dir": other_dir,
                    "adapter_dir": None,
                    "eval_results": results,
                }  # fmt: skip
            }
        }
    return job_id


def test_a_sweep_over_two_bases_ships_the_other_where_only_it_fits_and_never_one_the_gate_refuses(
    api_key, tiny_base, tiny_small_base, tmp_path, profiles
) -> None:
    """Issue 18 item 3's "every base the customer allowed": the sweep judges each quantization of
    each base. Under a 2 MB ceiling every candidate of the job's 4M-parameter base is over (its
    Q4_0 is 2.19 MB) and the smaller base's fit: the smaller one ships, its frontier rows name
    their base. When that base's fine-tune forgot (probe 0.5 -> 0.0, over the gate's max drop)
    none of its candidates may be chosen, and with nothing else within budget the job fails
    naming the target, the base and why."""
    status, error, state = _run(
        _two_base_job(api_key, tiny_base, tiny_small_base, tmp_path, {"max_artifact_mb": 2}, 0.5)
    )
    assert error is None, error
    entry = state["exported"]["pi-roomy"]
    frontier = entry["frontier"]
    assert [(c["model"], c["quantization"]) for c in frontier] == [
        (m, q) for m in (tiny_base, tiny_small_base) for q in SWEEP_QUANTIZATIONS
    ]
    assert all(c["misses"] for c in frontier if c["model"] == tiny_base)
    chosen = [c for c in frontier if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["model"] == tiny_small_base and chosen[0]["within_budget"]
    assert entry["base_model"] == tiny_small_base and entry["selection"]["model"] == tiny_small_base
    assert "/bases/0/export/" in entry["files"][0]

    status, error, state = _run(
        _two_base_job(api_key, tiny_base, tiny_small_base, tmp_path, {"max_artifact_mb": 2}, 0.0)
    )
    assert status == "failed" and error is not None and error["param"] == "targets[0]", error
    assert f"{tiny_small_base} Q4_0: its fine-tune fails the gate: max_probe_drop" in error["message"]
    assert "pi-roomy" not in (state.get("exported") or {})


def test_another_base_whose_export_fails_is_left_out_and_the_jobs_own_failure_fails_the_target(
    api_key, tiny_base, tiny_small_base, tmp_path, profiles
) -> None:
    """The sweep with a stand-in exporter (the real one is exercised above): the other base's
    failure at Q5_K_M leaves its remaining quantizations out, says so, and the pick goes on; the
    same failure of the job's own model fails the target."""
    from domain.job_config import JobConfig
    from services.errors import ExportFailed
    from worker.context import JobContext
    from worker.stages.sweep import sweep_target

    job_id = _two_base_job(api_key, tiny_base, tiny_small_base, tmp_path, {}, 0.5)
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        job.status = "running"  # as run_job leaves it: the sweep checks for a cancel between candidates
        ctx = JobContext(job.id, job.org_id, JobConfig.model_validate(job.config), tmp_path, dict(job.state))
    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"0" * 1000)

    def export_one(failing: str) -> Any:
        def run(profile: Any, model: str) -> dict[str, Any]:
            if model == failing and profile.quantization == "Q5_K_M":
                raise ExportFailed(0, f"pi-roomy: llama.cpp refused {model}")
            score = {"Q8_0": 0.6, "Q5_K_M": 0.7, "Q4_K_M": 0.5, "Q4_0": 0.4}[profile.quantization]
            return {"files": [str(weights)], "eval": {"score": score + (0.2 if model != tiny_base else 0)}}

        return run

    from export.profiles import get_profile

    entry = sweep_target(ctx, get_profile("pi-roomy"), export_one(tiny_small_base))
    rows = [(c["model"], c["quantization"]) for c in entry["frontier"]]
    assert rows == [*((tiny_base, q) for q in SWEEP_QUANTIZATIONS), (tiny_small_base, "Q8_0")]
    assert entry["selection"]["model"] == tiny_small_base and entry["selection"]["chosen"] == "Q8_0"
    assert entry["selection"]["left_out"] == {
        tiny_small_base: f"from Q5_K_M on: pi-roomy: llama.cpp refused {tiny_small_base}"
    }
    with pytest.raises(ExportFailed):
        sweep_target(ctx, get_profile("pi-roomy"), export_one(tiny_base))
