"""Gate: the eval gate's verdict; a refused job's artifacts are stored as rejected."""

from __future__ import annotations

from typing import Any

from services.errors import EvalGateFailed
from worker.context import JobContext, save_state
from worker.stages.common import made_from
from worker.stages.publish import store_rejected


def gate(ctx: JobContext) -> dict[str, Any]:
    """Apply the job's gate policy to base, fine-tuned and every scored artifact (eval/gate.py).
    A failing gate ends the job `failed` with code `eval_gate_failed` and every failing check in
    its message. Its artifacts are stored first with status `rejected` (downloadable, to see what
    went wrong) under a registry version no alias can point at; the publish stage never runs."""
    from eval.gate import BudgetCheck, decide_gate, model_inputs
    from eval.metrics import EvalResult

    exported: dict[str, dict[str, Any]] = ctx.state["exported"]
    artifacts = {
        target: EvalResult.from_dict(e["eval_result"]) for target, e in exported.items() if "eval_result" in e
    }
    # A job evaluated before the probe existed has none: decide_gate then notes that
    # max_probe_drop was not checked rather than failing it.
    base, fine_tuned, probes, baseline, baseline_note = model_inputs(
        ctx.config.gate, ctx.state["eval_results"]
    )
    decision = decide_gate(
        ctx.config.gate,
        base,
        fine_tuned,
        artifacts,
        probe_base=probes.get("probe_base"),
        probe_finetuned=probes.get("probe_fine_tuned"),
        # a job exported before budgets were recorded has none: only the other rules apply
        budgets={
            target: [BudgetCheck.model_validate(b) for b in entry["budgets"]]
            for target, entry in exported.items()
            if "budgets" in entry
        },
        baseline=baseline,
        references=_other_base_references(ctx, exported),
    )
    decision.notes += baseline_note
    verdict = decision.model_dump()
    if not decision.passed:
        save_state(ctx, {"gate": verdict})
        ctx.event("Eval gate failed: " + "; ".join(decision.reasons), level="error", data=verdict)
        store_rejected(ctx)
        raise EvalGateFailed(
            "the eval gate refused this model: "
            + "; ".join(decision.reasons)
            + ". Its artifacts were kept for inspection with status rejected and were not published"
        )
    ctx.event(
        f"Eval gate passed on {decision.metric} ({len(decision.checks)} checks)"
        + (f"; note: {'; '.join(decision.notes)}" if decision.notes else ""),
        data=verdict,
    )
    return {"gate": verdict}


def _other_base_references(ctx: JobContext, exported: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A target whose sweep chose another base's artifact is held to that base's fine-tune."""
    from eval.metrics import EvalResult

    return {
        target: EvalResult.from_dict(made_from(ctx, entry["base_model"])["eval_results"]["fine_tuned"])
        for target, entry in exported.items()
        if entry.get("base_model") and entry["base_model"] != ctx.config.model
    }
