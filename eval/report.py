"""A job's eval report: what the gate saw, as JSON and as one self-contained HTML page.

The JSON is assembled from what the worker already keeps (the evaluate stage's results for base and
fine-tuned, each exported artifact's own result, the gate verdict, the trainer's loss events);
nothing is re-scored here. The page draws its plots as inline SVG so it needs no script, no
network and no plotting library: the loss curve, each model's headline score with its bootstrap
95% CI, and per-class F1 for classification tasks.
"""

from __future__ import annotations

import html
from typing import Any

from eval.metrics import EvalResult

WIDTH, HEIGHT, PAD = 640, 240, 40  # plot box in px; PAD leaves room for the axis labels


def _results_by_subject(state: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(subject, runtime, EvalResult dict) of base, fine-tuned and each scored artifact."""
    results = state.get("eval_results") or {}
    named = (("base", "base"), ("fine_tuned", "fine-tuned"))
    out = [(name, "transformers", results[key]) for key, name in named if key in results]
    for target, entry in (state.get("exported") or {}).items():
        if "eval_result" in entry:  # GGUF artifacts are scored in llama.cpp, as shipped
            out.append((target, "llama.cpp", entry["eval_result"]))
    return out


def score_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model's headline score with its bootstrap 95% CI, as the gate read them."""
    rows = []
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


def build_report(
    job: dict[str, Any], state: dict[str, Any], losses: list[dict[str, float]]
) -> dict[str, Any]:
    """The report of one job. `job` holds id, model, status and error; `losses` the trainer's
    logged (step, train_loss) points in step order."""
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
        "gate": state.get("gate"),
        "synth_report": state.get("synth_report"),
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
        colour = "#8c959f" if s["subject"] == "base" else "#1f6feb"
        parts.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{w:.1f}" height="{HEIGHT - PAD - top:.1f}" '
            f'fill="{colour}"/>'
            f'<line x1="{mid:.1f}" y1="{lo:.1f}" x2="{mid:.1f}" y2="{hi:.1f}" stroke="#000"/>'
            + _text(mid, top - 4, f"{s['score']:.3f}", 11)
            + _text(mid, HEIGHT - PAD + 14, s["subject"], 11)
        )
    return _svg("".join(parts), "scores")


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
    bar = f'<span class="bar" style="width:{f1 * 80:.0f}px"></span>'  # 80 px is an F1 of 1.0
    return f"<td>{bar} {f1:.3f} <small>(n={int(scores.get('support', 0))})</small></td>"


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
        + "<h2>Training loss</h2>"
        + loss_svg(report["loss_curve"])
        + per_class_table(report["per_class"])
        + "</body></html>"
    )
