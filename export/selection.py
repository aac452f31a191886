"""The `best_within_budget` pick (issue 18 item 3): of a target's sweep of quantizations (of each
base it may ship), the best-scoring candidate that meets every budget on the device, ties to the
faster.

"On the device" means a device agent's measurement where one was made, else the device model's
prediction (export/device_model.py), never the worker host's figures: the point of the sweep is to
choose for the customer's hardware. Every budget counts here, whatever its `on_over_budget` rule:
a flagged budget is a miss the gate would publish, but a sweep has alternatives, so a candidate that
misses one is not chosen. A figure that could not be measured or predicted does not disqualify.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from export.device_budgets import artifact_mb, budget_checks
from export.profiles import DeviceProfile


class Candidate(BaseModel):
    quantization: str
    model: str | None = None  # the base it was fine-tuned from (None: a frontier recorded before)
    score: float
    size_mb: float
    decode_tokens_per_s: float | None
    prefill_tokens_per_s: float | None = None  # the sweep's bases share one per base: equal here
    peak_memory_mb: float | None
    figures: str  # "device agent" or "predicted"
    misses: list[str]  # each budget it does not meet, in words
    chosen: bool = False

    @property
    def within_budget(self) -> bool:
        return not self.misses


def device_figures(entry: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The figures a candidate is judged on: the agent's, else the prediction's."""
    if entry.get("device_stats"):
        return entry["device_stats"], "device agent"
    predicted = entry.get("device_prediction")
    if predicted:
        return predicted | {"measured_at": f"predicted: {predicted['basis']}"}, "predicted"
    return None, "none"


def candidate(
    profile: DeviceProfile, quantization: str, entry: dict[str, Any], model: str | None = None
) -> Candidate:
    """One exported, scored candidate (an export entry: files, eval, device figures) judged."""
    files = [Path(f) for f in entry["files"]]
    figures, source = device_figures(entry)
    checks = budget_checks(profile, files, None if figures else entry.get("runtime_stats"), figures)
    misses = [
        f"{c.budget} {c.measured:g} vs {c.limit:g}"
        for c in checks
        if c.measured is not None and not c.within()
    ]
    return Candidate(
        quantization=quantization,
        model=model,
        score=float(entry["eval"]["score"]),
        size_mb=round(artifact_mb(files), 2),
        decode_tokens_per_s=(figures or {}).get("decode_tokens_per_s"),
        prefill_tokens_per_s=(figures or {}).get("prefill_tokens_per_s"),
        peak_memory_mb=(figures or {}).get("peak_memory_mb"),
        figures=source,
        misses=misses,
    )


def pick(candidates: list[Candidate]) -> Candidate | None:
    """The best score within budget; an exact tie goes to the faster decode. None: none fits."""
    eligible = [c for c in candidates if c.within_budget]
    if not eligible:
        return None
    return max(eligible, key=lambda c: (c.score, c.decode_tokens_per_s or 0.0))
