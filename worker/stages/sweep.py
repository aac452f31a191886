"""A target with `select: best_within_budget` (issue 18 item 3): export every quantization of the
sweep (domain/lists.py SWEEP_QUANTIZATIONS) of every base it may ship (the job's model and the
target's `models`, each fine-tuned by the train stage), each scored on the held-out rows in its runtime and
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
from worker.stages.common import made_from


def sweep_target(
    ctx: JobContext, profile: DeviceProfile, export_one: Callable[[DeviceProfile, str], dict[str, Any]]
) -> dict[str, Any]:
    """The chosen candidate's export entry, carrying `frontier` (every candidate, judged) and
    `selection`. The candidates: each quantization of each base the target may ship (the job's
    model, then its `models`); `export_one(profile, base)` exports and scores one. A base whose
    fine-tune the gate would refuse has every candidate marked so, never chosen; another base
    whose export fails (ExportFailed) is left out from there on, with a warning and in
    `selection.left_out`, where the job's own model's failure fails the target. No candidate
    within budget: the job fails naming the target and each miss, and nothing of it is published."""
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    judged: list[Candidate] = []
    left_out: dict[str, str] = {}
    models = ctx.config.target_models(profile.name)
    for model in models:
        refused = [] if model == ctx.config.model else _base_refusal(ctx, model)
        for quant in SWEEP_QUANTIZATIONS:
            ctx.check_cancel()
            variant = profile.model_copy(update={"quantization": quant})
            try:
                entries[model, quant] = export_one(variant, model)
            except ExportFailed as exc:
                if model == ctx.config.model:
                    raise
                # another base that cannot be exported or run here (its converter, or the task's
                # grammar against its vocabulary) is left out of the sweep, not the target
                left_out[model] = f"from {quant} on: {exc.message}"
                line = f"Sweep {profile.name}: {model} left out {left_out[model]}"
                ctx.event(line, level="warn", data={"target": profile.name, "model": model})
                break
            c = candidate(profile, quant, entries[model, quant], model=model)
            judged.append(c.model_copy(update={"misses": [*refused, *c.misses]}))
            ctx.event(_line(profile.name, judged[-1], len(models) > 1),
                      data={"target": profile.name, **judged[-1].model_dump()})  # fmt: skip
    chosen = pick(judged)
    if chosen is None:
        misses = "; ".join(f"{_name(c, len(models) > 1)}: {', '.join(c.misses)}" for c in judged)
        raise ExportFailed(
            ctx.config.target_names.index(profile.name),
            f"{profile.name}: no quantization of the sweep meets its budgets on the device ({misses})",
        )
    chosen.chosen = True
    ctx.event(
        f"Chose {_name(chosen, len(models) > 1)} for {profile.name}: the best score within every budget "
        f"({chosen.score:.3f}, {chosen.size_mb:.1f} MB, {_tps(chosen)} on the device, {chosen.figures})",
        data={"target": profile.name, "chosen": chosen.quantization, "model": chosen.model},
    )
    frontier = [c.model_dump() | {"within_budget": c.within_budget} for c in judged]
    selection: dict[str, Any] = {"select": "best_within_budget", "chosen": chosen.quantization}
    selection |= {"model": chosen.model} | ({"left_out": left_out} if left_out else {})
    return entries[chosen.model or ctx.config.model, chosen.quantization] | {
        "frontier": frontier,
        "selection": selection,
    }


def _base_refusal(ctx: JobContext, model: str) -> list[str]:
    """The gate's refusal of another base's fine-tune, as misses of each of its candidates."""
    from eval.gate import fine_tune_reasons

    results = made_from(ctx, model)["eval_results"]
    return [f"its fine-tune fails the gate: {r}" for r in fine_tune_reasons(ctx.config.gate, results)]


def _name(c: Candidate, many_bases: bool) -> str:
    return f"{c.model} {c.quantization}" if many_bases and c.model else c.quantization


def _tps(c: Candidate) -> str:
    decode = "unknown tokens/s" if c.decode_tokens_per_s is None else f"{c.decode_tokens_per_s:,.1f} tokens/s"
    prefill = "" if c.prefill_tokens_per_s is None else f" (prefill {c.prefill_tokens_per_s:,.0f})"
    return decode + prefill


def _line(target: str, c: Candidate, many_bases: bool) -> str:
    verdict = "within budget" if c.within_budget else "not chosen: " + ", ".join(c.misses)
    return (
        f"Sweep {target} {_name(c, many_bases)}: score {c.score:.3f}, {c.size_mb:.1f} MB, "
        f"{_tps(c)} on the device ({c.figures}), {verdict}"
    )
