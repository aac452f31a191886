"""Base against fine-tuned, as the evaluate stage scores them: the held-out rows and the
general-ability probe, each model loaded once. The worker calls it in its own process on a CPU
worker and in worker/eval_process.py's child on a GPU worker; both get the same results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eval.metrics import EvalResult, TaskType
from eval.probe import ProbeItem
from eval.runners import Device

HeldOut = tuple[list[dict[str, Any]], TaskType, list[str] | None]  # rows, how to score them, labels


def score_models(
    base_dir: Path,
    tuned_dir: Path,
    held_out: HeldOut,
    probe: Sequence[ProbeItem],
    *,
    device: Device = "cpu",
    between: Callable[[], None] | None = None,
) -> dict[str, EvalResult]:
    """Base and fine-tuned on the held-out rows and on the general-ability probe's items, keyed
    as the job's `eval_results` ("base", "fine_tuned", "probe_base", "probe_fine_tuned").
    `between` runs after the base model's answers (the in-process stage's cancel check)."""
    from eval.probe import run_probe
    from eval.runners import evaluate_model, one_load_per_model

    rows, task_type, labels = held_out
    with one_load_per_model():  # each model answers the task rows and the probe from one load
        base = evaluate_model("hf", base_dir, rows, task_type, labels, device=device)
        probe_base = run_probe("hf", base_dir, probe, device=device)
        if between is not None:
            between()
        tuned = evaluate_model("hf", tuned_dir, rows, task_type, labels, device=device)
        probe_tuned = run_probe("hf", tuned_dir, probe, device=device)
    return {"base": base, "fine_tuned": tuned, "probe_base": probe_base, "probe_fine_tuned": probe_tuned}
