"""A job's eval report: what the gate saw, as JSON and as one self-contained HTML page.

The JSON is assembled from what the worker already keeps (the evaluate stage's results for the bare
base, the base prompted with k training examples (eval/prompting.py) when the job has it, and the
fine-tune, each exported artifact's own result, the gate verdict, the trainer's loss events);
nothing is re-scored here. The page draws its plots as inline SVG so it needs no script, no
network and no plotting library: the loss curve, each model's headline score with its bootstrap
95% CI, and per-class F1 for classification tasks. The general-ability probe (eval/probe.py) of
base and fine-tuned, with the drop the gate's max_probe_drop reads, is a small table with bars.
What fine-tuning added over prompting (fine-tuned minus prompted base) is said in one line.
"""

from __future__ import annotations

import html
from typing import Any

from eval.metrics import EvalResult

WIDTH, HEIGHT, PAD = 640, 240, 40  # plot box in px; PAD leaves room for the axis labels


def _results_by_subject(state: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(subject, runtime, EvalResult dict) of base, prompted base (jobs evaluated since it exists),
    fine-tuned and each scored artifact (one shipped with the task's grammar twice: as shipped,
    and without it, to show what constraining bought)."""
    results = state.get("eval_results") or {}
    named = (("base", "base"), ("base_prompted", "base-prompted"), ("fine_tuned", "fine-tuned"))
    out = [(name, "transformers", results[key]) for key, name in named if key in results]
    for target, entry in (state.get("exported") or {}).items():
        if "eval_result" in entry:  # GGUF and ONNX artifacts are scored as shipped, in their runtime
            runtime = (entry.get("runtime_stats") or {}).get("runtime", "llama.cpp")  # GGUF before stats
            if "eval_result_free" in entry:  # shipped with the task's grammar: also scored without it
                out.append((f"{target} (no grammar)", runtime, entry["eval_result_free"]))
                runtime += " + grammar"
            out.append((target, runtime, entry["eval_result"]))
    return out


def score_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model's headline score with its bootstrap 95% CI, as the gate read them; an artifact's
    row also carries what its runtime measured on the worker host (decode speed, memory), the
    prompted base's the number of training examples in its prompt (`shots`, k)."""
    rows = []
    exported = state.get("exported") or {}
    for subject, runtime, data in _results_by_subject(state):
        r = EvalResult.from_dict(data)
        rows.append(
            {
                "subject": subject,
                "runtime": runtime,
                "metric": r.metric,
                "score": r.score,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "n": r.n,
                "parse_rate": r.parse_rate,
                "shots": r.report.get("shots"),
                "host_measurements": (exported.get(subject) or {}).get("runtime_stats"),
                "device_measurements": (exported.get(subject) or {}).get("device_stats"),
                "device_prediction": (exported.get(subject) or {}).get("device_prediction"),
            }
        )
    return rows


def per_class(state: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Per-class precision/recall/F1 of every scored model that has them (classification only)."""
    out = {}
    for subject, _, data in _results_by_subject(state):
        if classes := (data.get("report") or {}).get("per_class"):
            out[subject] = classes
    return out


def _ci_score(r: EvalResult) -> dict[str, float]:
    return {"score": r.score, "ci_low": r.ci_low, "ci_high": r.ci_high}


def probe_section(state: dict[str, Any], max_drop: float | None = None) -> dict[str, Any] | None:
    """Base and fine-tuned on the general-ability probe, each with its bootstrap 95% CI, the drop
    (base minus fine-tuned, what the gate's max_probe_drop bounds) and the gate's check of it.
    None for a job not evaluated yet, or evaluated before the probe existed."""
    results = state.get("eval_results") or {}
    if "probe_base" not in results or "probe_fine_tuned" not in results:
        return None
    base = EvalResult.from_dict(results["probe_base"])
    tuned = EvalResult.from_dict(results["probe_fine_tuned"])
    checks = (state.get("gate") or {}).get("checks") or []
    return {
        "metric": tuned.metric,
        "n": tuned.n,
        "base": _ci_score(base),
        "fine_tuned": _ci_score(tuned),
        "drop": round(base.get(tuned.metric).score - tuned.score, 4),  # as eval/gate.py computes it
        "per_kind": {"base": base.report.get("per_kind"), "fine_tuned": tuned.report.get("per_kind")},
        "max_drop": max_drop,
        "check": next((c for c in checks if c.get("rule") == "max_probe_drop"), None),
    }


def prompting_section(state: dict[str, Any]) -> dict[str, Any] | None:
    """Bare base, prompted base (with k) and fine-tuned on the fine-tune's headline metric, and what
    fine-tuning added over prompting (fine-tuned minus prompted base) and over the bare base.
    None for a job evaluated before the prompted base existed, or not evaluated yet."""
    results = state.get("eval_results") or {}
    if not {"base", "base_prompted", "fine_tuned"} <= results.keys():
        return None
    tuned = EvalResult.from_dict(results["fine_tuned"])
    metric = tuned.metric
    bare = EvalResult.from_dict(results["base"]).get(metric)
    prompted_result = EvalResult.from_dict(results["base_prompted"])
    prompted = prompted_result.get(metric)
    added = round(tuned.score - prompted.score, 4)
    return {
        "metric": metric,
        "shots": prompted_result.report.get("shots"),
        "base": {"score": bare.score, "ci_low": bare.ci_low, "ci_high": bare.ci_high},
        "base_prompted": {"score": prompted.score, "ci_low": prompted.ci_low, "ci_high": prompted.ci_high},
        "fine_tuned": _ci_score(tuned),
        "added_over_prompting": added,
        "added_over_base": round(tuned.score - bare.score, 4),
        "summary": f"fine-tuning added {added:+.3f} {metric} over prompting "
        f"(prompted base {prompted.score:.3f} -> fine-tuned {tuned.score:.3f})",
    }


def build_report(
    job: dict[str, Any], state: dict[str, Any], losses: list[dict[str, float]]
) -> dict[str, Any]:
    """The report of one job. `job` holds id, model, status and error, and optionally
    `max_probe_drop` (the job's gate policy); `losses` the trainer's logged (step, train_loss)
    points in step order."""
    scores = score_rows(state)
    return {
        "object": "fine_tuning.job.report",
        "job_id": job["id"],
        "model": job["model"],
        "status": job["status"],
        "error": job.get("error"),
        "metric": scores[0]["metric"] if scores else None,
        "loss_curve": losses,
        "scores": scores,
        "per_class": per_class(state),
        "prompting": prompting_section(state),
        "probe": probe_section(state, job.get("max_probe_drop")),
        "gate": state.get("gate"),
        "synth_report": state.get("synth_report"),
        "checkpoint_selection": state.get("checkpoint_selection"),
        # best_within_budget targets: each quantization of the sweep, judged on the device
        "frontiers": {
            target: entry["frontier"]
            for target, entry in (state.get("exported") or {}).items()
            if entry.get("frontier")
        },
    }


# ---- HTML ---------------------------------------------------------------------------------------


def _svg(body: str, title: str) -> str:
    return (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def loss_svg(points: list[dict[str, float]]) -> str:
    """Training loss against step, both axes linear, y from 0 so a flat curve looks flat."""
    if len(points) < 2:
        return "<p>Fewer than two logged steps: no curve to draw.</p>"
    steps = [p["step"] for p in points]
    top = max(p["train_loss"] for p in points) or 1.0
    x0, x1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    # map step -> [PAD, WIDTH-PAD] and loss -> [HEIGHT-PAD, PAD] (SVG y grows downwards)
    xy = [
        (
            PAD + (p["step"] - x0) / (x1 - x0) * (WIDTH - 2 * PAD),
            HEIGHT - PAD - p["train_loss"] / top * (HEIGHT - 2 * PAD),
        )
        for p in points
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    axes = _axes(f"step {x0:g}-{x1:g}", f"loss 0-{top:.3g}")
    return _svg(
        f'{axes}<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{line}"/>', "loss curve"
    )


def _axes(x_label: str, y_label: str) -> str:
    return (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
        + _text(WIDTH / 2, HEIGHT - 8, x_label, 12)
        + _text(PAD, PAD - 12, y_label, 12)
    )


def _text(x: float, y: float, text: str, size: int) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" font-size="{size}">{html.escape(text)}</text>'


def scores_svg(scores: list[dict[str, Any]]) -> str:
    """One bar per model on a 0-1 scale, with a whisker over its bootstrap 95% CI."""
    if not scores:
        return "<p>Not evaluated yet.</p>"
    slot = (WIDTH - 2 * PAD) / len(scores)
    scale = HEIGHT - 2 * PAD  # a score of 1.0 is a full-height bar
    parts = [_axes(scores[0]["metric"], "score 0-1")]
    for i, s in enumerate(scores):
        x = PAD + i * slot + slot * 0.2
        w, mid = slot * 0.6, PAD + i * slot + slot / 2
        top = HEIGHT - PAD - s["score"] * scale
        lo, hi = HEIGHT - PAD - s["ci_low"] * scale, HEIGHT - PAD - s["ci_high"] * scale
        colour = "#8c959f" if s["subject"].startswith("base") else "#1f6feb"
        name = s["subject"] + (f" (k={s['shots']})" if s.get("shots") is not None else "")
        parts.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{w:.1f}" height="{HEIGHT - PAD - top:.1f}" '
            f'fill="{colour}"/>'
            f'<line x1="{mid:.1f}" y1="{lo:.1f}" x2="{mid:.1f}" y2="{hi:.1f}" stroke="#000"/>'
            + _text(mid, top - 4, f"{s['score']:.3f}", 11)
            + _text(mid, HEIGHT - PAD + 14, name, 11)
        )
    return _svg("".join(parts), "scores")


def frontier_svg(target: str, frontier: list[dict[str, Any]]) -> str:
    """Score against size, one point per quantization (of each base) of the sweep, labelled with
    its decode speed on the device: filled blue within every budget, hollow red over one, ringed
    for the choice.
    x is linear from 0 to the largest size, y from 0 to 1."""
    widest = max(c["size_mb"] for c in frontier) or 1.0
    parts = [_axes(f"size 0-{widest:.3g} MB", f"{target}: score 0-1")]
    for c in frontier:
        x = PAD + c["size_mb"] / widest * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - c["score"] * (HEIGHT - 2 * PAD)
        fill, stroke = ("#1f6feb", "#1f6feb") if c["within_budget"] else ("none", "#cf222e")
        tps = c.get("decode_tokens_per_s")
        label = _candidate_name(c, frontier) + ("" if tps is None else f" {tps:,.0f} t/s")
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{fill}" stroke="{stroke}" stroke-width="2"/>'
            + (
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#1a7f37"/>'
                if c["chosen"]
                else ""
            )
            + _text(x, y - 12, label, 10)
        )
    return _svg("".join(parts), f"{target} frontier")


def _candidate_name(c: dict[str, Any], frontier: list[dict[str, Any]]) -> str:
    """A candidate's quantization, with its base's short name where the sweep spanned bases."""
    bases = {f.get("model") for f in frontier}
    short = str(c.get("model") or "").rsplit("/", 1)[-1]
    return f"{short} {c['quantization']}" if len(bases) > 1 and short else c["quantization"]


def frontiers_html(frontiers: dict[str, list[dict[str, Any]]]) -> str:
    parts = []
    for target, frontier in frontiers.items():
        chosen = next((_candidate_name(c, frontier) for c in frontier if c["chosen"]), None)
        rows = "".join(
            f"<tr><td>{html.escape(_candidate_name(c, frontier))}{' (chosen)' if c['chosen'] else ''}</td>"
            f"<td>{c['score']:.3f}</td><td>{c['size_mb']:.1f}</td><td>{_tps(c)}</td>"
            f"<td>{_tps(c, 'prefill_tokens_per_s')}</td>"
            f"<td>{html.escape(c['figures'])}</td>"
            f"<td>{html.escape(', '.join(c['misses']) or 'within budget')}</td></tr>"
            for c in frontier
        )
        columns = ("candidate", "score", "MB", "decode tokens/s", "prefill tokens/s", "figures", "budgets")
        head = "".join(f"<th>{h}</th>" for h in columns)
        head = f"<tr>{head}</tr>"
        parts.append(
            f"<h2>{html.escape(target)}: best within budget ({html.escape(str(chosen))})</h2>"
            + frontier_svg(target, frontier)
            + f"<table>{head}{rows}</table>"
        )
    return "".join(parts)


def prompting_html(prompting: dict[str, Any] | None) -> str:
    """What fine-tuning added over prompting, in one line, then what the prompted base was."""
    if prompting is None:
        return "<p>No prompted base was scored for this job (yet).</p>"
    k = prompting["shots"]
    examples = f"{k} example{'' if k == 1 else 's'}" if k is not None else "examples"
    return (
        f'<p class="summary">{html.escape(prompting["summary"])}.</p>'
        f"<p>The prompted base is the base model given the task's instruction and {examples} from the "
        f"training rows, scored by the same metric; the bare base, given the row alone, scored "
        f"{prompting['base']['score']:.3f} ({prompting['added_over_base']:+.3f} for fine-tuning).</p>"
    )


def probe_html(probe: dict[str, Any] | None) -> str:
    """Base and fine-tuned on the probe, each a bar (80 px is a score of 1.0) with its 95% CI, then
    the drop with the allowed one and the gate's check. A table, not a plot: two numbers."""
    if probe is None:
        return "<p>No general-ability probe was run (yet).</p>"
    rows = "".join(
        f"<tr><td>{who}</td><td>{_bar(s['score'])} {s['score']:.3f}</td>"
        f"<td>{s['ci_low']:.3f}-{s['ci_high']:.3f}</td></tr>"
        for who, s in (("base", probe["base"]), ("fine-tuned", probe["fine_tuned"]))
    )
    allowed = f", allowed {probe['max_drop']:.3f}" if probe.get("max_drop") is not None else ""
    check, verdict = probe.get("check"), ""
    if check is not None:
        ok = "passed" if check["passed"] else "failed"
        verdict = f' <span class="{"ok" if check["passed"] else "bad"}">max_probe_drop {ok}</span>'
    drop = f'<tr><td>drop</td><td colspan="2">{probe["drop"]:+.3f}{allowed}{verdict}</td></tr>'
    return (
        f"<p>{probe['n']} fixed questions (arithmetic, facts, yes/no, one word, copy/transform); "
        "the drop is base minus fine-tuned.</p>"
        f"<table><tr><th>model</th><th>{html.escape(probe['metric'])}</th><th>95% CI</th></tr>"
        f"{rows}{drop}</table>"
    )


def _bar(score: float) -> str:
    return f'<span class="bar" style="width:{score * 80:.0f}px"></span>'


def per_class_table(classes: dict[str, dict[str, dict[str, float]]]) -> str:
    if not classes:
        return ""
    labels = sorted({label for per in classes.values() for label in per})
    head = "".join(f"<th>{html.escape(s)}</th>" for s in classes)
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(_f1_cell(per.get(label)) for per in classes.values())
        + "</tr>"
        for label in labels
    )
    return f"<h2>Per-class F1</h2><table><tr><th>label</th>{head}</tr>{rows}</table>"


def _f1_cell(scores: dict[str, float] | None) -> str:
    if not scores:
        return "<td>-</td>"
    f1 = scores["f1"]
    return f"<td>{_bar(f1)} {f1:.3f} <small>(n={int(scores.get('support', 0))})</small></td>"


def gate_section(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return "<p>The gate has not run (yet).</p>"
    verdict = "passed" if gate["passed"] else "failed"
    checks = "".join(
        f'<li class="{"ok" if c["passed"] else "bad"}">{html.escape(c["detail"])}</li>'
        for c in gate["checks"]
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in gate.get("notes") or [])
    return f'<p class="{verdict}">Gate {verdict} on {html.escape(gate["metric"])}</p><ul>{checks}{notes}</ul>'


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:720px;margin:2em auto;color:#1f2328}"
    "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}"
    ".bar{display:inline-block;height:10px;background:#1f6feb}.passed,.ok{color:#1a7f37}"
    ".failed,.bad{color:#cf222e}"
)


def selection_html(selection: dict[str, Any] | None) -> str:
    """The held-out scores measured during training and the step that ships."""
    if not selection or selection.get("best_step") is None:
        return ""
    best = selection["best_step"]
    cells = "".join(
        f"<tr><td>{int(step)}</td><td>{value:.3f}</td><td>{'shipped' if step == best else ''}</td></tr>"
        for step, value in selection["history"]
    )
    stopped = selection.get("stopped_early")
    stop = " Training stopped early: the score had stopped improving." if stopped else ""
    return (
        "<h3>Checkpoint selection</h3><p>Held-out score (a subset of the held-out rows) during training; "
        f"the best step ships.{stop}</p><table><tr><th>step</th><th>score</th><th></th></tr>{cells}</table>"
    )


def _tps(figures: dict[str, Any] | None, key: str = "decode_tokens_per_s") -> str:
    value = (figures or {}).get(key)
    return "-" if value is None else f"{value:,.1f}"


def device_html(scores: list[dict[str, Any]]) -> str:
    """Decode and prefill speed per artifact: on the worker host (decode only: the host's artifact
    eval times its answers, not a prompt), on a device agent of its profile, and as the device
    model predicts them (its basis and, where an agent measured, its misses)."""
    rows = [s for s in scores if s.get("host_measurements") or s.get("device_prediction")]
    if not rows:
        return ""
    prefill = "prefill_tokens_per_s"
    body = "".join(
        f"<tr><td>{html.escape(s['subject'])}</td><td>{_tps(s.get('host_measurements'))}</td>"
        f"<td>{_tps(s.get('device_measurements'))}</td><td>{_tps(s.get('device_prediction'))}</td>"
        f"<td>{_tps(s.get('device_measurements'), prefill)}</td>"
        f"<td>{_tps(s.get('device_prediction'), prefill)}</td>"
        f"<td>{html.escape(_where(s))}</td></tr>"
        for s in rows
    )
    head = (
        "<tr><th>artifact</th><th>decode, host</th><th>decode, device agent</th><th>decode, predicted</th>"
        "<th>prefill, device agent</th><th>prefill, predicted</th><th>how</th></tr>"
    )
    return f"<h2>Tokens/s on the device</h2><table>{head}{body}</table>"


def _where(s: dict[str, Any]) -> str:
    measured, predicted = s.get("device_measurements"), s.get("device_prediction") or {}
    parts = [measured["measured_at"]] if measured else []
    if predicted:
        miss = predicted.get("error_vs_measured")
        off = f"; off by {miss:+.0%}" if miss is not None else ""
        parts.append(f"decode predicted: {predicted['basis']}{off}")
    if predicted.get("prefill_basis"):
        miss = predicted.get("prefill_error_vs_measured")
        off = f"; off by {miss:+.0%}" if miss is not None else ""
        parts.append(f"prefill predicted: {predicted['prefill_basis']}{off}")
    return "; ".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """The whole page: gate verdict first (what the customer asks), then the evidence."""
    title = f"edgetune report: {report['job_id']}"
    error = report.get("error") or {}
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Base model {html.escape(report['model'])}; status {html.escape(report['status'])}"
        + (f": {html.escape(str(error.get('message', '')))}" if error else "")
        + "</p><h2>Eval gate</h2>"
        + gate_section(report["gate"])
        + "<h2>Scores on the held-out rows</h2>"
        + scores_svg(report["scores"])
        + device_html(report["scores"])
        + frontiers_html(report.get("frontiers") or {})
        + prompting_html(report.get("prompting"))
        + "<h2>General-ability probe</h2>"
        + probe_html(report.get("probe"))
        + "<h2>Training loss</h2>"
        + loss_svg(report["loss_curve"])
        + selection_html(report.get("checkpoint_selection"))
        + per_class_table(report["per_class"])
        + "</body></html>"
    )
