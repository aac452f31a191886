"""A tiny LFM2 checkpoint built offline: the real architecture with random weights.

Dimensions are multiples of 256 so llama.cpp's block quantizers (Q4_K needs 256-wide rows) accept
every tensor. The tokenizer is a byte-level BPE trained in-process on the phrases the tests use, and
it carries the LFM2 chat template, so the whole pipeline (template, assistant-only loss, GGUF
conversion, llama.cpp chat) runs as it would on a real LFM2.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = [
    "<|pad|>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|tool_list_start|>",
    "<|tool_list_end|>",
    "<|tool_response_start|>",
    "<|tool_response_end|>",
]

_CORPUS_WORDS = (
    "the a an is of to and in that it for on with as was by this are be at or from positive negative "
    "neutral review product great terrible love hate good bad awful excellent quality price service "
    "system user assistant tool what capital france paris japan tokyo classify sentiment label answer "
    "question weather city boston london summary text hello world yes no maybe because battery screen"
)


def _corpus() -> list[str]:
    words = _CORPUS_WORDS.split()
    lines = []
    for i in range(400):
        lines.append(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)))
    lines += [w.capitalize() + "." for w in words]
    return lines


def build_tokenizer(chat_template: str):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>"
    )
    hf_tok.chat_template = chat_template
    return hf_tok


def build_tiny_lfm2(out_dir: Path, chat_template: str, seed: int = 0, hidden_size: int = 256) -> Path:
    """Write a ~4M-parameter LFM2 (6 layers: 4 short-conv, 2 GQA attention) to `out_dir`; a
    smaller `hidden_size` makes a smaller one of the same shape (a second base for a sweep)."""
    import torch
    from transformers import Lfm2Config, Lfm2ForCausalLM

    torch.manual_seed(seed)
    tok = build_tokenizer(chat_template)
    cfg = Lfm2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,  # block_auto_adjust_ff_dim -> effective FFN width 2x hidden
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=["conv", "conv", "full_attention", "conv", "conv", "full_attention"],
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = Lfm2ForCausalLM(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
