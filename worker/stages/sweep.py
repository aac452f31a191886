"""A target with `select: best_within_budget` (issue 18 item 3): export every quantization of the
sweep (domain/lists.py SWEEP_QUANTIZATIONS), each scored on the held-out rows in its runtime and
measured on an agent of the profile or predicted (worker/stages/device_figures.py), then ship the
best-scoring one that meets every budget on the device (export/selection.py), with the frontier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.lists import SWEEP_QUANTIZATIONS
from export.profiles import DeviceProfile
from export.selection import Candidate, candidate, pick
from services.errors import ExportFailed
from worker.context import JobContext


def sweep_target(
    ctx: JobContext, profile: DeviceProfile, export_one: Callable[[DeviceProfile], dict[str, Any]]
) -> dict[str, Any]:
    """The chosen candidate's export entry, carrying `frontier` (every candidate, judged) and
    `selection`. No candidate within budget: the job fails naming the target and each miss, and
    nothing of the target is published."""
    entries: dict[str, dict[str, Any]] = {}
    judged: list[Candidate] = []
    for quant in SWEEP_QUANTIZATIONS:
        ctx.check_cancel()
        variant = profile.model_copy(update={"quantization": quant})
        entries[quant] = export_one(variant)
        judged.append(candidate(profile, quant, entries[quant]))
        ctx.event(_line(profile.name, judged[-1]), data={"target": profile.name, **judged[-1].model_dump()})
    chosen = pick(judged)
    if chosen is None:
        misses = "; ".join(f"{c.quantization}: {', '.join(c.misses)}" for c in judged)
        raise ExportFailed(
            ctx.config.target_names.index(profile.name),
            f"{profile.name}: no quantization of the sweep meets its budgets on the device ({misses})",
        )
    chosen.chosen = True
    ctx.event(
        f"Chose {chosen.quantization} for {profile.name}: the best score within every budget "
        f"({chosen.score:.3f}, {chosen.size_mb:.1f} MB, {_tps(chosen)} on the device, {chosen.figures})",
        data={"target": profile.name, "chosen": chosen.quantization},
    )
    frontier = [c.model_dump() | {"within_budget": c.within_budget} for c in judged]
    return entries[chosen.quantization] | {
        "frontier": frontier,
        "selection": {"select": "best_within_budget", "chosen": chosen.quantization},
    }


def _tps(c: Candidate) -> str:
    decode = "unknown tokens/s" if c.decode_tokens_per_s is None else f"{c.decode_tokens_per_s:,.1f} tokens/s"
    prefill = "" if c.prefill_tokens_per_s is None else f" (prefill {c.prefill_tokens_per_s:,.0f})"
    return decode + prefill


def _line(target: str, c: Candidate) -> str:
    verdict = "within budget" if c.within_budget else "over budget: " + ", ".join(c.misses)
    return (
        f"Sweep {target} {c.quantization}: score {c.score:.3f}, {c.size_mb:.1f} MB, "
        f"{_tps(c)} on the device ({c.figures}), {verdict}"
    )
