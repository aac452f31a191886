"""bench/recipes_throughput.py: the FLOP arithmetic by hand, the real LFM2 shapes, and rows that fit
their max_length. Timings are never asserted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.recipes_throughput import (
    SHAPES,
    bench_tokenizer,
    fit_conversation,
    lfm2_config,
    model_flops_per_token,
    rendered_length,
    summarize,
)
from recipes.estimate import ModelShape

# 4 layers of which 2 attention, d=16, N=1000 matmul parameters (tied), mean sequence 10 tokens
TOY = ModelShape(
    params=1000, hidden=16, intermediate=32, layers=4, attention_layers=2, vocab=8, tied_embeddings=True
)
ATTENTION = 12 * 2 * 16 * 10  # 12 * L_attn * d * S = 3840


def test_flops_per_token_by_hand() -> None:
    assert model_flops_per_token(TOY, "full_sft", 10) == 6 * 1000 + ATTENTION  # 9840
    assert model_flops_per_token(TOY, "lora_sft", 10) == 4 * 1000 + ATTENTION  # 7840
    # DPO (LoRA): the policy's 4N + attention, plus the reference's forward, a third of 6N + attention
    assert model_flops_per_token(TOY, "dpo", 10) == 7840 + (6000 + ATTENTION) / 3  # 11120


def test_mfu_arithmetic() -> None:
    # 3 timed steps x 2 rows = 6 sequences of 10 tokens in 2 s -> 30 tokens/s x 9840 FLOPs = 295,200 FLOP/s
    measured = {"recipe": "full_sft", "timed_steps": 3, "batch_size": 2, "tokens": 60, "seconds": 2.0}
    row = summarize(measured, TOY, peak_flops=1e6)
    assert row["mean_seq"] == 10
    assert row["tokens_per_s"] == 30
    assert row["mfu_pct"] == pytest.approx(100 * 295_200 / 1e6)
    # DPO steps run chosen and rejected: twice the sequences for the same batch size
    assert summarize({**measured, "recipe": "dpo", "tokens": 120}, TOY, 1e6)["mean_seq"] == 10


@pytest.mark.parametrize(("name", "params"), [("350m", 354_483_968), ("1.2b", 1_170_340_608)])
def test_real_lfm2_shapes(name: str, params: int) -> None:
    """The configs give exactly the published parameter counts (built on the meta device)."""
    import torch
    from transformers import Lfm2ForCausalLM

    special = SimpleNamespace(pad_token_id=0, bos_token_id=1, eos_token_id=7)
    config = lfm2_config(SHAPES[name], special)
    with torch.device("meta"):
        model = Lfm2ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(t == "full_attention" for t in config.layer_types) == 6


def test_rows_fit_max_length() -> None:
    """Every row is fitted to just under the max length: long enough to measure seq_len-token
    rows, never truncated (which could cut the assistant answer that carries the loss)."""
    tok = bench_tokenizer()
    for seq_len in (64, 128):
        lengths = [rendered_length(tok, fit_conversation(tok, seq_len, row)) for row in range(20)]
        assert all(0.9 * seq_len < n <= seq_len for n in lengths), lengths
