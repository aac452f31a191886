"""Evaluate: base (bare and prompted) and fine-tune on the held-out rows, and the probe."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.lists import METHODS
from worker.context import JobContext
from worker.held_out import held_out_rows, read_rows

if TYPE_CHECKING:
    from eval.runners import Device
    from eval.scoring import HeldOut
from worker.stages.common import stop_check


def eval_rows(ctx: JobContext) -> HeldOut:
    """The job's held-out rows and how to score them (`held_out_rows`)."""
    return held_out_rows(ctx.config, Path(ctx.state["eval_path"]))


def evaluate(ctx: JobContext, *, in_child: bool | None = None) -> dict[str, Any]:
    """Score base and fine-tuned on the held-out rows, and on the fixed general-ability probe
    (eval/probe.py) that the gate's max_probe_drop reads to catch forgetting.

    Where it runs: on a GPU worker (the job's device, from prepare's NVML check, is "cuda") in a
    process of its own (worker/eval_process.py), which loads both models in bf16 on the GPU and
    decodes in batches; CUDA never enters this (Celery) process, the GPU memory goes back when
    the process exits, and a cancel or budget stop ends it within about a second. On a CPU worker
    it runs here, in fp32, one row at a time, as it always has. `in_child` overrides the choice
    (the tests run the child path on the CPU; its scores are the same as in process). A sweep's
    other bases (targets[].models) are scored the same way after the job's model."""
    from eval.probe import load_probe

    held_out, probe, shots = eval_rows(ctx), load_probe(), _shots(ctx)
    base_dir, tuned_dir = Path(ctx.state["base_model_dir"]), Path(ctx.state["merged_dir"])
    # one stop check for the stage: its running cost counts every base scored in it
    score = partial(_score, ctx, stop=stop_check(ctx, "evaluate"), in_child=in_child)
    scored = score(base_dir, tuned_dir, held_out, probe, shots)
    result = _summary(scored)
    ctx.event(_eval_line(scored), type="metrics", data=result)
    # the full results (every metric, per-class report) feed the gate and the job's report
    out: dict[str, Any] = {"eval": result, "eval_results": {name: r.to_dict() for name, r in scored.items()}}
    if ctx.config.other_models:
        out["other_bases"] = _evaluate_other_bases(ctx, held_out, probe, shots, score)
    return out


def _evaluate_other_bases(
    ctx: JobContext,
    held_out: HeldOut,
    probe: Any,
    shots: list[dict[str, Any]] | None,
    score: Callable[..., dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """A sweep's other bases scored as the job's model is: base, prompted base, fine-tune and
    the probe, so the sweep can refuse a base whose fine-tune the gate would (eval/gate.py)."""
    bases: dict[str, dict[str, Any]] = ctx.state["other_bases"]
    for model in ctx.config.other_models:
        ctx.check_cancel()
        entry = bases[model]
        base_dir, tuned_dir = Path(entry["base_model_dir"]), Path(entry["merged_dir"])
        scored = score(base_dir, tuned_dir, held_out, probe, shots)
        entry["eval"] = _summary(scored)
        entry["eval_results"] = {name: r.to_dict() for name, r in scored.items()}
        ctx.event(f"{model} (for the sweep): " + _eval_line(scored), type="metrics",
                  data={"model": model, **entry["eval"]})  # fmt: skip
    return bases


def _score(
    ctx: JobContext,
    base_dir: Path,
    tuned_dir: Path,
    held_out: HeldOut,
    probe: Any,
    shots: list[dict[str, Any]] | None,
    *,
    stop: Callable[[], BaseException | None],
    in_child: bool | None,
) -> dict[str, Any]:
    from eval.scoring import score_models

    device: Device = "cuda" if ctx.state.get("device") == "cuda" else "cpu"
    if in_child if in_child is not None else device == "cuda":
        from worker.eval_process import score_models_in_child

        return score_models_in_child(ctx, base_dir, tuned_dir, held_out, probe, device, stop, shots)
    return score_models(
        base_dir, tuned_dir, held_out, probe, device=device, between=ctx.check_cancel, shots=shots
    )


def _summary(scored: dict[str, Any]) -> dict[str, Any]:
    """Base, fine-tuned, their delta and the probe, as the job's `eval` (scores and CIs)."""
    base, tuned = scored["base"], scored["fine_tuned"]
    probe_base, probe_tuned = scored["probe_base"], scored["probe_fine_tuned"]
    result = {
        "metric": tuned.metric,
        "n": tuned.n,
        "base": score_summary(base),
        "fine_tuned": score_summary(tuned),
        "delta": round(tuned.score - base.score, 4),
        "probe": {
            "metric": probe_tuned.metric,
            "n": probe_tuned.n,
            "base": score_summary(probe_base),
            "fine_tuned": score_summary(probe_tuned),
            "drop": round(probe_base.score - probe_tuned.score, 4),
        },
    }
    prompted = scored.get("base_prompted")
    if prompted is not None:
        result["base_prompted"] = {**score_summary(prompted), "shots": prompted.report.get("shots")}
    return result


def _eval_line(scored: dict[str, Any]) -> str:
    base, tuned, prompted = scored["base"], scored["fine_tuned"], scored.get("base_prompted")
    probe_base, probe_tuned = scored["probe_base"], scored["probe_fine_tuned"]
    return (
        f"Eval on {tuned.n} held-out rows: {tuned.metric} base {base.score:.3f}"
        + (f", base prompted ({prompted.report.get('shots')}-shot) {prompted.score:.3f}" if prompted else "")
        + f" -> fine-tuned {tuned.score:.3f}; general-ability probe ({probe_tuned.n} items) "
        f"{probe_base.score:.3f} -> {probe_tuned.score:.3f}"
    )


def _shots(ctx: JobContext) -> list[dict[str, Any]] | None:
    """The training rows the prompted base draws its k examples from (eval/prompting.py), in
    the chat shape the held-out rows have. None for DPO: its rows are preference pairs, and
    its baseline is the bare base."""
    from recipes.chat_data import normalize_row

    if METHODS[ctx.config.method.type].rows != "chat":
        return None
    return [normalize_row(r) for r in read_rows(Path(ctx.state["train_path"]))]


def score_summary(r: Any) -> dict[str, Any]:
    return {"score": round(r.score, 4), "ci_low": round(r.ci_low, 4), "ci_high": round(r.ci_high, 4)}
