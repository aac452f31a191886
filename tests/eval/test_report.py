"""eval/report.py: the report is built from real scorer results and the page draws what it holds."""

from __future__ import annotations

import re

from eval.metrics import score_classification
from eval.report import build_report, render_html

LABELS = ["positive", "negative", "<b>odd</b>"]
REFS = ["positive", "negative", "positive", "<b>odd</b>", "negative", "positive"]


def _state() -> dict:
    base = score_classification(["negative"] * 6, REFS, LABELS)
    tuned = score_classification(REFS, REFS, LABELS)
    quant = score_classification(REFS[:-1] + ["negative"], REFS, LABELS)
    return {
        "eval_results": {"base": base.to_dict(), "fine_tuned": tuned.to_dict()},
        "exported": {
            "laptop-cpu": {"files": [], "eval_result": quant.to_dict()},
            "gpu-server": {"files": []},
        },
        "gate": {
            "passed": True,
            "metric": "accuracy",
            "reasons": [],
            "checks": [
                {"rule": "min_delta", "subject": "fine-tuned", "passed": True, "detail": "1.0 > 0.333"}
            ],
            "artifacts": {},
            "notes": [],
        },
    }


def _report(losses: list[dict[str, float]]) -> dict:
    job = {"id": "ftjob-1", "model": "tiny", "status": "succeeded", "error": None}
    return build_report(job, _state(), losses)


def test_scores_follow_base_fine_tuned_then_each_scored_artifact() -> None:
    r = _report([])
    assert [(s["subject"], s["runtime"]) for s in r["scores"]] == [
        ("base", "transformers"),
        ("fine-tuned", "transformers"),
        ("laptop-cpu", "llama.cpp"),  # gpu-server has no eval_result: not a row
    ]
    base, tuned, quant = (s["score"] for s in r["scores"])
    assert base == 2 / 6 and tuned == 1.0 and quant == 5 / 6
    assert all(s["ci_low"] <= s["score"] <= s["ci_high"] for s in r["scores"])
    assert r["per_class"]["fine-tuned"]["positive"]["f1"] == 1.0
    assert r["per_class"]["base"]["positive"]["f1"] == 0.0 and r["metric"] == "accuracy"


def test_page_draws_one_bar_per_model_and_every_loss_point() -> None:
    losses = [{"step": s, "train_loss": 2.0 / s} for s in range(1, 8)]
    page = render_html(_report(losses))
    assert page.count("<rect") == 3
    points = re.search(r'<polyline[^>]*points="([^"]+)"', page)
    assert points and len(points.group(1).split()) == 7
    ys = [float(p.split(",")[1]) for p in points.group(1).split()]
    assert ys == sorted(ys)  # a falling loss is drawn going down the page (SVG y grows downwards)
    assert "Gate passed on accuracy" in page


def test_page_escapes_labels_and_says_what_is_missing() -> None:
    page = render_html(_report([{"step": 1, "train_loss": 1.0}]))
    assert "<b>odd</b>" not in page and "&lt;b&gt;odd&lt;/b&gt;" in page
    assert "Fewer than two logged steps" in page
    empty = render_html(build_report({"id": "j", "model": "m", "status": "queued"}, {}, []))
    assert "Not evaluated yet" in empty and "has not run" in empty and "<svg" not in empty
