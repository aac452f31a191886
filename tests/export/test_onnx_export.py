"""LFM2 -> stateful ONNX decoder (export/onnx_export.py) and its runtime (eval/onnx_decoder.py),
on the tiny random LFM2: parity with torch at every split of prefill and decode, the transformers.js
layout (loaded by transformers.js itself, under Node), 4-bit weights, greedy answers identical to
transformers, and refusals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from eval.onnx_decoder import decoder_session, state_names
from eval.runners import SPEED_TOKENS, generate_hf, generate_onnx
from eval.runtime_stats import RuntimeStats
from export.onnx_export import PARITY_TOLERANCE, OnnxExportError, check_parity, export_onnx
from tests.export.tiny_artifacts import TinyArtifacts

ROWS = [
    {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "x"}]}
    for text in ("great product, love it", "terrible battery", "the screen is a screen", "hello world")
]


@pytest.fixture(scope="module")
def exported(tiny: TinyArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(tiny.hf_dir, out, keep_fp32=True)
    return out


@pytest.fixture(scope="module")
def torch_model(tiny: TinyArtifacts):  # type: ignore[no-untyped-def]
    return AutoModelForCausalLM.from_pretrained(tiny.hf_dir, dtype=torch.float32).eval()


def test_layout_is_transformers_js_with_4_bit_weights(exported: Path) -> None:
    assert {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()} >= {
        "onnx/model.onnx",
        "onnx/model_q4.onnx",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    }
    q4 = onnx.load(str(exported / "onnx" / "model_q4.onnx"))
    assert any(n.op_type == "MatMulNBits" for n in q4.graph.node)
    # every projection is 4-bit; the fp32 file is >4x the q4 one on this tiny model
    assert not [n for n in q4.graph.node if n.op_type == "MatMul" and "proj" in n.name]
    assert (exported / "onnx" / "model.onnx").stat().st_size > 4 * (
        exported / "onnx" / "model_q4.onnx"
    ).stat().st_size


def test_inputs_and_outputs_carry_each_layers_state(exported: Path, torch_model) -> None:
    graph = onnx.load(str(exported / "onnx" / "model_q4.onnx"), load_external_data=False).graph
    past, present = state_names(torch_model.config)
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "position_ids", *past]
    assert [o.name for o in graph.output] == ["logits", *present]
    kinds = torch_model.config.layer_types
    assert sum(n.startswith("past_conv.") for n in past) == kinds.count("conv")
    assert sum(n.endswith(".key") for n in past) == len(kinds) - kinds.count("conv")


@pytest.mark.parametrize(("prompt_len", "steps"), [(1, 6), (5, 3), (12, 0), (2, 10)])
def test_fp32_graph_matches_torch_at_every_prefill_and_decode_split(
    exported: Path, torch_model, prompt_len: int, steps: int
) -> None:
    diff = check_parity(torch_model, exported / "onnx" / "model.onnx", prompt_len=prompt_len, steps=steps)
    assert diff < PARITY_TOLERANCE


def test_parity_check_catches_a_graph_of_another_model(exported: Path, tiny: TinyArtifacts) -> None:
    other = AutoModelForCausalLM.from_pretrained(tiny.hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        other.model.layers[0].conv.conv.weight.mul_(1.5)  # one conv kernel off: a wrong state path
    with pytest.raises(OnnxExportError, match="disagrees with torch"):
        check_parity(other, exported / "onnx" / "model.onnx")


def test_state_is_what_makes_decoding_right(exported: Path, torch_model) -> None:
    """Decoding token 5 with the state from tokens 0-4 gives the full forward's logits; with a
    fresh (zero) state it does not, so the graph really reads the state it is given."""
    ids = [3, 17, 42, 99, 7, 250]
    with torch.no_grad():
        reference = torch_model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    decoder = decoder_session(exported / "onnx" / "model.onnx", torch_model.config)
    decoder.step(ids[:5])
    np.testing.assert_allclose(decoder.step(ids[5:])[0, -1], reference, atol=1e-4)
    decoder.reset()
    assert np.abs(decoder.step(ids[5:])[0, -1] - reference).max() > 1e-2


def test_greedy_answers_in_onnxruntime_match_transformers(exported: Path, tiny: TinyArtifacts) -> None:
    stats = RuntimeStats(runtime="onnxruntime")
    got = generate_onnx(exported / "onnx" / "model.onnx", ROWS, max_new_tokens=8, n_ctx=4096, stats=stats)
    assert got == generate_hf(tiny.hf_dir, ROWS, max_new_tokens=8)
    assert stats.context == 4096 and stats.decode_tokens == SPEED_TOKENS
    assert stats.decode_tokens_per_s and stats.decode_tokens_per_s > 0
    assert stats.peak_rss_growth_mb is not None and stats.peak_rss_growth_mb >= 0
    q4 = generate_onnx(exported / "onnx" / "model_q4.onnx", ROWS, max_new_tokens=8)
    assert len(q4) == len(ROWS) and all(isinstance(a, str) for a in q4)


def test_only_lfm2_checkpoints_are_exported(tmp_path: Path) -> None:
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    with pytest.raises(OnnxExportError, match="LFM2 models only.*'llama'"):
        export_onnx(tmp_path / "llama", tmp_path / "out")


JS_DIR = Path(__file__).resolve().parents[1] / "js"  # transformers.js, installed by `make install`


def _transformers_js_decode_step(artifact: Path, dtype: str, ids: list[int]) -> np.ndarray:
    """transformers.js (onnxruntime-node) loads the artifact by its folder layout, prefills ids[:-1],
    feeds ids[-1] with the state it got back, and returns that step's logits."""
    args = [
        "node",
        str(JS_DIR / "decode_step.mjs"),
        str(artifact.parent),
        artifact.name,
        dtype,
        json.dumps(ids),
    ]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return np.array(json.loads(run.stdout.strip().splitlines()[-1]))


def test_transformers_js_loads_the_artifact_and_decodes_with_its_state(exported: Path, torch_model) -> None:
    ids = [1, 3, 17, 42, 99, 7, 250]
    with torch.no_grad():
        reference = torch_model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    span = reference.max() - reference.min()
    fp32 = _transformers_js_decode_step(exported, "fp32", ids)
    assert np.abs(fp32 - reference).max() / span < PARITY_TOLERANCE  # the browser library agrees with torch
    # and on the shipped q4 graph it computes what edgetune's own onnxruntime eval scored
    decoder = decoder_session(exported / "onnx" / "model_q4.onnx", torch_model.config)
    decoder.step(ids[:-1])
    ours = decoder.step(ids[-1:])[0, -1]
    q4 = _transformers_js_decode_step(exported, "q4", ids)
    assert np.abs(q4 - ours).max() / span < PARITY_TOLERANCE
