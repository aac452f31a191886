"""eval/scoring.py with the prompted base, on the tiny random LFM2 (the scores mean nothing; what is
checked is which rows each model answered, k, and that the GPU child's spec path gives the same
results as in process). Base and "fine-tuned" are the same checkpoint: one load serves all."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import eval.scoring
from eval.probe import load_probe
from eval.prompting import few_shot_rows
from eval.runners import evaluate_model
from eval.scoring import prompt_budget, prompted_rows, score_models
from tests.export.tiny_artifacts import inference_template
from tests.support.tiny_lfm2 import build_tiny_lfm2

LABELS = ["positive", "negative"]
SYSTEM = "Classify the sentiment. Answer with exactly one of: positive, negative."
TEXTS = ["great product love it", "terrible battery", "good quality", "awful service bad price"]


def _row(text: str, label: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
            {"role": "assistant", "content": label},
        ]
    }


HELD_OUT = [_row(t, "negative" if t[0] in "ta" else "positive") for t in TEXTS]
WORDS = ("good", "bad", "hello", "world", "quality", "price", "screen", "service")
TRAINING = [_row(f"the {w} review", LABELS[i % 2]) for i, w in enumerate(WORDS)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lfm2(tmp_path_factory.mktemp("scoring") / "tiny-lfm2", inference_template())


def test_the_prompted_base_answers_the_held_out_rows_with_k_training_examples(model_dir: Path) -> None:
    held_out = (HELD_OUT, "classification", LABELS)
    probe = load_probe()[:2]
    plain = score_models(model_dir, model_dir, held_out, probe)
    scored = score_models(model_dir, model_dir, held_out, probe, shots=TRAINING)
    assert list(plain) == ["base", "fine_tuned", "probe_base", "probe_fine_tuned"]
    assert list(scored) == ["base", "base_prompted", "fine_tuned", "probe_base", "probe_fine_tuned"]
    assert {k: v for k, v in scored.items() if k != "base_prompted"} == plain  # the rest unchanged
    prompted = scored["base_prompted"]
    assert prompted.report["shots"] == 8 and prompted.n == len(HELD_OUT) and prompted.metric == "accuracy"
    rows, k = prompted_rows(model_dir, held_out, TRAINING)
    again = evaluate_model("hf", model_dir, rows, "classification", LABELS)
    assert k == 8 and prompted == replace(again, report={**again.report, "shots": 8})
    assert score_models(model_dir, model_dir, held_out, probe, shots=[]) == plain


def test_k_follows_the_models_context_through_its_tokenizer(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    from eval.runners import _prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert prompt_budget(model_dir, tokenizer) == 2048  # the tiny model's max_position_embeddings
    held_out = (HELD_OUT, "classification", LABELS)

    def tokens(p: dict[str, Any]) -> int:
        return len(_prompt_ids(tokenizer, p))

    bare = max(tokens({"messages": r["messages"][:-1]}) for r in HELD_OUT)
    _, four = few_shot_rows(HELD_OUT, TRAINING, "classification", LABELS, tokens, 10_000, max_shots=4)
    rows4, _ = few_shot_rows(HELD_OUT, TRAINING, "classification", LABELS, tokens, 10_000, max_shots=4)
    longest4 = max(tokens({"messages": r["messages"][:-1]}) for r in rows4)
    monkeypatch.setattr(eval.scoring, "PROMPTED_MAX_TOKENS", longest4 + 16)  # room for exactly 4
    assert four == 4 and bare < longest4
    assert prompted_rows(model_dir, held_out, TRAINING)[1] == 4
    monkeypatch.setattr(eval.scoring, "PROMPTED_MAX_TOKENS", bare + 16)  # the instruction alone
    rows, k = prompted_rows(model_dir, held_out, TRAINING)
    assert k == 0 and rows == HELD_OUT


def test_the_gpu_childs_spec_carries_the_shots(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """score_models_in_child's spec, through JSON, into the child's `score`: the results of
    score_models in process (the process itself is tests/worker/test_eval_process.py's)."""
    import worker.eval_process as eval_process

    def child(_ctx: Any, _kind: Any, spec: dict[str, Any], _stop: Any, **_: Any) -> str:
        return eval_process.score(json.loads(json.dumps(spec)), "job", Path("."))

    monkeypatch.setattr(eval_process, "run_in_child", child)
    held_out = (HELD_OUT[:2], "classification", LABELS)
    probe = load_probe()[:1]
    ctx: Any = None  # the fake child needs no job
    in_child = eval_process.score_models_in_child(
        ctx, model_dir, model_dir, held_out, probe, "cpu", lambda: None, shots=TRAINING
    )
    assert in_child == score_models(model_dir, model_dir, held_out, probe, shots=TRAINING)
    assert in_child["base_prompted"].report["shots"] == 8
