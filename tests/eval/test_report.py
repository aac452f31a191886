"""eval/report.py: the report is built from real scorer results and the page draws what it holds."""

from __future__ import annotations

import re
from dataclasses import replace

from eval.metrics import score_classification
from eval.probe import load_probe, score_probe
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


def test_an_onnx_artifact_is_labelled_with_the_runtime_that_scored_it() -> None:
    state = _state()
    onnx = score_classification(REFS, REFS, LABELS).to_dict()
    state["exported"]["browser-webgpu"] = {"eval_result": onnx, "runtime_stats": {"runtime": "onnxruntime"}}
    job = {"id": "ftjob-3", "model": "tiny", "status": "succeeded"}
    rows = {s["subject"]: s["runtime"] for s in build_report(job, state, [])["scores"]}
    assert rows["browser-webgpu"] == "onnxruntime" and rows["laptop-cpu"] == "llama.cpp"


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


def _probe_state() -> dict:
    """_state() after a real probe: base gets 48 of the 64 items right, the fine-tune 32."""
    items = load_probe()
    answers = [i.answers[0] for i in items]
    base = score_probe(items, answers[:48] + [""] * 16)
    tuned = score_probe(items, answers[:32] + [""] * 32)
    state = _state()
    state["eval_results"] |= {"probe_base": base.to_dict(), "probe_fine_tuned": tuned.to_dict()}
    state["gate"]["checks"].append(
        {"rule": "max_probe_drop", "subject": "probe", "passed": True, "detail": "drop +0.250 within 0.300"}
    )
    return state


def test_report_carries_the_probe_with_its_cis_drop_and_gate_check() -> None:
    job = {"id": "ftjob-2", "model": "tiny", "status": "succeeded", "max_probe_drop": 0.3}
    probe = build_report(job, _probe_state(), [])["probe"]
    assert (probe["metric"], probe["n"]) == ("answer_match", 64)
    assert probe["base"]["score"] == 0.75 and probe["fine_tuned"]["score"] == 0.5
    for side in ("base", "fine_tuned"):
        assert probe[side]["ci_low"] < probe[side]["score"] < probe[side]["ci_high"]
    assert probe["drop"] == 0.25 and probe["max_drop"] == 0.3
    assert probe["check"]["rule"] == "max_probe_drop" and probe["check"]["passed"] is True
    assert sum(probe["per_kind"]["base"].values()) > sum(probe["per_kind"]["fine_tuned"].values())
    # a job evaluated before the probe existed has no probe section
    assert build_report(job, _state(), [])["probe"] is None


def test_page_shows_the_probe_with_its_cis_and_drop() -> None:
    job = {"id": "ftjob-2", "model": "tiny", "status": "succeeded", "max_probe_drop": 0.3}
    report = build_report(job, _probe_state(), [])
    page = render_html(report)
    table = re.search(r"<h2>General-ability probe</h2>.*?</table>", page)
    assert table, page
    base, tuned = report["probe"]["base"], report["probe"]["fine_tuned"]
    assert f"0.750</td><td>{base['ci_low']:.3f}-{base['ci_high']:.3f}</td>" in table.group(0)
    assert f"0.500</td><td>{tuned['ci_low']:.3f}-{tuned['ci_high']:.3f}</td>" in table.group(0)
    assert "width:60px" in table.group(0) and "width:40px" in table.group(0)  # 80 px is a score of 1
    assert "+0.250, allowed 0.300" in table.group(0) and "max_probe_drop passed" in table.group(0)
    assert "64 fixed questions" in page
    assert page.count("<svg") == 1 and page.count("<rect") == 3  # the probe adds no plot
    assert "No general-ability probe" in render_html(build_report(job, _state(), []))


def _prompted_state() -> dict:
    """_state() with the base prompted with 4 training examples: 3 of the 6 rows right."""
    state = _state()
    prompted = score_classification(REFS[:3] + ["positive", "positive", "negative"], REFS, LABELS)
    state["eval_results"]["base_prompted"] = replace(
        prompted, report={**prompted.report, "shots": 4}
    ).to_dict()
    return state


def test_report_compares_the_fine_tune_with_the_prompted_base_and_keeps_the_bare_one() -> None:
    job = {"id": "ftjob-4", "model": "tiny", "status": "succeeded"}
    r = build_report(job, _prompted_state(), [])
    assert [(s["subject"], s["shots"]) for s in r["scores"]] == [
        ("base", None),
        ("base-prompted", 4),
        ("fine-tuned", None),
        ("laptop-cpu", None),
    ]
    p = r["prompting"]
    assert (p["metric"], p["shots"]) == ("accuracy", 4)
    assert (p["base"]["score"], p["base_prompted"]["score"], p["fine_tuned"]["score"]) == (2 / 6, 0.5, 1.0)
    assert p["added_over_prompting"] == 0.5 and p["added_over_base"] == round(1 - 2 / 6, 4)
    assert (
        p["summary"]
        == "fine-tuning added +0.500 accuracy over prompting (prompted base 0.500 -> fine-tuned 1.000)"
    )
    assert "base-prompted" in r["per_class"]


def test_page_shows_the_prompted_base_with_k_and_what_fine_tuning_added() -> None:
    page = render_html(
        build_report({"id": "ftjob-4", "model": "tiny", "status": "succeeded"}, _prompted_state(), [])
    )
    assert page.count("<rect") == 4 and ">base-prompted (k=4)</text>" in page and ">base</text>" in page
    assert (
        "fine-tuning added +0.500 accuracy over prompting (prompted base 0.500 -&gt; fine-tuned 1.000)"
        in page
    )
    assert "instruction and 4 examples from the training rows" in page and "scored 0.333 (+0.667" in page


def test_a_job_evaluated_before_the_prompted_base_still_renders() -> None:
    r = build_report({"id": "ftjob-5", "model": "tiny", "status": "succeeded"}, _state(), [])
    assert r["prompting"] is None and "base-prompted" not in [s["subject"] for s in r["scores"]]
    page = render_html(r)
    assert "No prompted base was scored" in page and page.count("<rect") == 3


def test_page_shows_decode_speed_on_the_host_the_device_and_as_predicted() -> None:
    state = _state()
    state["exported"]["laptop-cpu"] |= {
        "runtime_stats": {"runtime": "llama.cpp", "decode_tokens_per_s": 41.5},
        "device_stats": {
            "decode_tokens_per_s": 12.25,
            "prefill_tokens_per_s": 80.0,
            "measured_at": "device agent pi <1> (arm)",
        },
        "device_prediction": {
            "decode_tokens_per_s": 15.0,
            "basis": "17.1 GB/s nominal",
            "error_vs_measured": 0.2245,
            "prefill_tokens_per_s": 60.0,
            "prefill_basis": "614 GOPS nominal",
            "prefill_error_vs_measured": -0.25,
        },
    }
    report = build_report({"id": "j", "model": "m", "status": "succeeded"}, state, [])
    row = next(s for s in report["scores"] if s["subject"] == "laptop-cpu")
    assert row["device_measurements"]["decode_tokens_per_s"] == 12.25
    assert row["device_prediction"]["decode_tokens_per_s"] == 15.0
    page = render_html(report)
    section = page.split("<h2>Tokens/s on the device</h2>")[1].split("</table>")[0]
    cells = re.findall(r"<td>(.*?)</td>", section)
    assert cells[:6] == ["laptop-cpu", "41.5", "12.2", "15.0", "80.0", "60.0"]
    assert "device agent pi &lt;1&gt; (arm)" in cells[6]
    assert "decode predicted: 17.1 GB/s nominal; off by +22%" in cells[6]
    assert "prefill predicted: 614 GOPS nominal; off by -25%" in cells[6]
    # no host, device or predicted figures anywhere: no section
    assert "on the device</h2>" not in render_html(_report([]))
