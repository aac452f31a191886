"""The HF runner's batched greedy decoding (what the evaluate stage uses on a GPU) gives the tokens
one-at-a-time decoding gives: left padding, the attention mask and the end-token cut change
nothing. Checked in fp32 on the CPU on the tiny LFM2 (short convolutions and attention both see
the padding), and once in bf16 on CUDA behind the `gpu` marker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from eval.probe import load_probe, probe_rows
from eval.runners import _batches, _prompt_ids, generate_hf, one_load_per_model, prompts_and_references
from tests.export.tiny_artifacts import inference_template
from tests.support.tiny_lfm2 import build_tiny_lfm2

MAX_NEW = 12


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lfm2(tmp_path_factory.mktemp("hf") / "tiny-lfm2", inference_template())


def _rows() -> list[dict[str, Any]]:
    """Prompts of quite different lengths: probe questions, a system prompt, a multi-turn chat."""
    rows = probe_rows(load_probe())[:6]
    system = {"role": "system", "content": "Classify the sentiment of the review: positive or negative."}
    rows.append(
        {
            "messages": [
                system,
                {"role": "user", "content": "Review: great product, love the screen and the battery"},
                {"role": "assistant", "content": "positive"},
            ]
        }
    )
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hello world"},
                {"role": "user", "content": "what is the capital of france? answer in one word"},
                {"role": "assistant", "content": "paris"},
            ]
        }
    )
    return rows


def _with_extra_stop(model_dir: Path, outputs: list[str], dest: Path) -> Path:
    """A copy of the checkpoint whose generation config also stops at a one-token character that
    some answers contain and others do not: rows then end at different steps within a batch."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chars = sorted({c for o in outputs for c in o if not c.isspace()})
    for c in chars:
        ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and 0 < sum(c in o for o in outputs) < len(outputs):
            break
    else:
        pytest.skip(f"no character to stop at among the answers {outputs!r}")
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], ids[0]]
    (dest / "generation_config.json").write_text(json.dumps(config))
    return dest


def test_batches_group_longest_first_within_the_limits() -> None:
    assert _batches([3, 9, 5, 7], 2, batch_size=3) == [[1, 3, 2], [0]]
    assert _batches([3, 9, 5, 7], 2, batch_size=None) == [[1, 3, 2, 0]]
    assert _batches([100_000, 5], 2, batch_size=None) == [[0], [1]]  # a huge row goes alone


def test_batched_greedy_answers_equal_one_at_a_time(tiny_hf: Path, tmp_path: Path) -> None:
    rows = _rows()
    one = generate_hf(tiny_hf, rows, MAX_NEW)
    tokenizer = AutoTokenizer.from_pretrained(tiny_hf)
    lengths = {len(_prompt_ids(tokenizer, p)) for p in prompts_and_references(rows)[0]}
    assert len(lengths) >= 4  # the batches really are padded
    for batch_size in (3, len(rows)):
        assert generate_hf(tiny_hf, rows, MAX_NEW, batch_size=batch_size) == one

    # rows that end early (an end token) while the rest of their batch goes on
    stopping = _with_extra_stop(tiny_hf, one, tmp_path / "stopping")
    one_stop = generate_hf(stopping, rows, MAX_NEW)
    assert one_stop != one  # the extra end token cut some answers short
    with one_load_per_model():
        assert generate_hf(stopping, rows, MAX_NEW, batch_size=len(rows)) == one_stop
        assert generate_hf(stopping, rows, MAX_NEW, batch_size=3) == one_stop


@pytest.mark.gpu
def test_bf16_batches_on_cuda_answer_like_one_at_a_time(tiny_hf: Path) -> None:
    """The evaluate stage's GPU path: bf16 on CUDA, default batching. bf16 rounding may flip a
    near-tied greedy step of a random model, so the bar is most answers equal, all well formed."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rows = probe_rows(load_probe())
    with one_load_per_model():
        batched = generate_hf(tiny_hf, rows, MAX_NEW, device="cuda")
        single = generate_hf(tiny_hf, rows, MAX_NEW, device="cuda", batch_size=1)
    assert len(batched) == len(rows) and all(isinstance(a, str) and "<|im_end|>" not in a for a in batched)
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    assert same >= 0.9 * len(rows), (batched, single)
