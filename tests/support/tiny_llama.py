"""A tiny attention-only (Llama) checkpoint: the base on which padding-free packing is checked on a
CPU, where LFM2's short convolutions cannot keep packed rows apart without the CUDA kernel."""

from __future__ import annotations

from pathlib import Path

from tests.support.tiny_lfm2 import build_tokenizer


def build_tiny_llama(out_dir: Path, chat_template: str, seed: int = 0) -> Path:
    """Write a ~2M-parameter Llama (4 layers, GQA) with the tiny test tokenizer to `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = build_tokenizer(chat_template)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
