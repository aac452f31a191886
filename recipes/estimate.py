"""What a training run will take before it runs: tokens, FLOPs, peak GPU memory, time.

All arithmetic, no training. The plan endpoint and the worker's budget checks call these, and
`bench/plan_accuracy.py` compares them with real runs.

Conventions (stated once, used everywhere):
- N is the parameters that cost matmul FLOPs per token: every parameter except the embedding
  table, plus the LM head (which is the embedding matrix again when tied, as in LFM2).
- Training FLOPs per token: 6N for full fine-tuning (forward 2N, backward 4N: input and weight
  gradients), 4N for LoRA (the frozen weights get no weight gradient; the adapters' own FLOPs are
  under 1% at r <= 64 and are ignored), plus PaLM's attention term 12 * L_attn * d_attn * S for the
  attention layers (QK^T and AV, forward and backward, counted non-causally as PaLM does). LFM2's
  short-convolution layers add ~2 * 3 * d * kernel FLOPs per token, negligible, so ignored.
- These are model FLOPs (what MFU is measured against), not hardware FLOPs: activation
  checkpointing recomputes the forward pass but does not count.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.lists import TrainingType

Method = TrainingType
GIB = 1024**3


@dataclass(frozen=True)
class GpuClass:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense peak from the vendor's datasheet (no sparsity)


# Datasheet figures; "memory_gib" is what the driver exposes to a process, a little under the label.
GPU_CLASSES = (
    GpuClass("h100-80gb", 79.1, 989.0),
    GpuClass("a100-80gb", 79.1, 312.0),
    GpuClass("a100-40gb", 39.4, 312.0),
    GpuClass("l40s-48gb", 44.4, 362.0),
    GpuClass("l4-24gb", 22.0, 121.0),
)


@dataclass(frozen=True)
class ModelShape:
    params: int  # all parameters, embeddings once
    hidden: int
    intermediate: int
    layers: int
    attention_layers: int
    vocab: int
    tied_embeddings: bool

    @property
    def matmul_params(self) -> int:
        embed = self.vocab * self.hidden
        return self.params if self.tied_embeddings else self.params - embed

    @classmethod
    def from_config(cls, config: dict[str, Any], params: int | None = None) -> ModelShape:
        hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        inter = ffn_width(config, hidden)
        layer_types = config.get("layer_types")  # LFM2: "conv" / "full_attention" per layer
        attn = sum(t == "full_attention" for t in layer_types) if layer_types else layers
        vocab = int(config["vocab_size"])
        tied = bool(config.get("tie_word_embeddings", config.get("tie_embedding", True)))
        return cls(
            params=params or approx_params(hidden, inter, layers, vocab, tied),
            hidden=hidden,
            intermediate=inter,
            layers=layers,
            attention_layers=attn,
            vocab=vocab,
            tied_embeddings=tied,
        )

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelShape:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        return cls.from_config(config, count_params(Path(model_dir)))


def ffn_width(config: dict[str, Any], hidden: int) -> int:
    """The MLP width the model really has. LFM2 declares block_ff_dim (6912 for the 350M) and, with
    block_auto_adjust_ff_dim, trims it as transformers' Lfm2MLP does: 2/3 of it, times
    block_ffn_dim_multiplier, rounded up to block_multiple_of (6912 -> 4608, 12288 -> 8192)."""
    width = int(config.get("block_ff_dim") or config.get("intermediate_size") or 4 * hidden)
    if config.get("block_auto_adjust_ff_dim"):
        width = int(2 * width / 3)
        if config.get("block_ffn_dim_multiplier") is not None:
            width = int(config["block_ffn_dim_multiplier"] * width)
        multiple = int(config.get("block_multiple_of") or 1)
        width = multiple * ((width + multiple - 1) // multiple)
    return width


def approx_params(hidden: int, inter: int, layers: int, vocab: int, tied: bool) -> int:
    # per layer: ~4 d^2 for the mixer (attention q/k/v/o or LFM2's in_proj 3d + out_proj d) and
    # 3 d * ff for the gated MLP; embeddings once, twice when untied
    return layers * (4 * hidden * hidden + 3 * hidden * inter) + vocab * hidden * (1 if tied else 2)


def count_params(model_dir: Path) -> int | None:
    """Exact parameter count from the safetensors headers (no weights are read)."""
    from recipes.base_models import count_safetensors_params

    return count_safetensors_params(model_dir)


def lora_params(shape: ModelShape, r: int, n_targets: int) -> int:
    """Trainable LoRA parameters, approximated as r * (d_in + d_out) per adapted Linear with
    d_in + d_out ~ 2d on average over LFM2's targets (in_proj is d->3d, w2 is ff->d, ...)."""
    per_layer = n_targets * r * 2 * shape.hidden
    return shape.layers * per_layer


def flops_per_token(shape: ModelShape, method: Method, seq_len: int) -> float:
    dense = (6 if method == "full" else 4) * shape.matmul_params
    attention = 12 * shape.attention_layers * shape.hidden * seq_len
    return float(dense + attention)


def training_flops(shape: ModelShape, method: Method, tokens: int, mean_seq_len: int) -> float:
    """Model FLOPs for `tokens` trained tokens (all epochs), rows of `mean_seq_len` on average."""
    return flops_per_token(shape, method, mean_seq_len) * tokens


def reference_forward_flops(shape: ModelShape, tokens: int, mean_seq_len: int) -> float:
    """DPO scores every pair under a frozen reference too: a forward pass only, a third of full
    training's 6N + attention (2N + 4 * L_attn * d * S) per token. With LoRA the reference is the
    base with the adapter switched off: the same FLOPs, no extra weights."""
    return flops_per_token(shape, "full", mean_seq_len) / 3 * tokens


@dataclass(frozen=True)
class MemoryEstimate:
    total_bytes: int
    parts: dict[str, int]

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB


# Bytes per parameter for GPU training as the recipes run it. Full fine-tuning keeps fp32 master
# weights (recipes.full_sft.load_trainable_model): 4 weight + 4 grad + 8 AdamW moments, plus the
# bf16 copy autocast casts each weight to during the step (2) = 18. LoRA loads the frozen base in
# bf16 (2 per parameter) and PEFT upcasts the adapters to fp32: 4 weight + 4 grad + 8 Adam = 16.
FULL_BYTES_PER_PARAM, LORA_BYTES_PER_TRAINABLE, WEIGHT_BYTES = 18, 16, 2
# The cross-entropy over LFM2's 65k vocabulary makes the logits the peak: bf16 logits (2), their
# fp32 upcast for the loss (4) and its gradient (4) live together for every token of the batch.
LOGIT_BYTES_PER_ELEMENT = 10
# TRL's SFT loss (its fused LM head) computes the log-probabilities a chunk of tokens at a time and
# never holds the whole batch's logits; counting 4,096 tokens' worth is an upper bound on a chunk.
# DPO still materializes them for every token.
FUSED_LOSS_CHUNK_TOKENS = 4096
CUDA_CONTEXT_BYTES = int(1.5 * GIB)  # driver context, cuBLAS workspaces
FRAGMENTATION = 1.10  # PyTorch's caching allocator rarely packs tighter than this


def peak_memory(
    shape: ModelShape,
    method: Method,
    batch_size: int,
    seq_len: int,
    trainable: int = 0,
    reference_copy: bool = False,
    checkpointing: bool = True,
    fused_loss: bool = False,
    shards: int = 1,
) -> MemoryEstimate:
    """Peak GPU memory of one training step (one micro-batch of `batch_size` rows of `seq_len`)
    on each of `shards` GPUs.
    `reference_copy`: full DPO holds a second, frozen bf16 copy of the model as its reference
    (pass DPO's batch as pairs x 2: chosen and rejected run together). `checkpointing`: activation
    checkpointing on (the plan's default); off, every layer keeps all its intermediates.
    `fused_loss`: TRL's chunked SFT loss, which never holds the whole batch's logits."""
    tokens = batch_size * seq_len
    if method == "full":
        states = FULL_BYTES_PER_PARAM * shape.params
    else:
        states = WEIGHT_BYTES * shape.params + LORA_BYTES_PER_TRAINABLE * trainable
    if reference_copy:
        states += WEIGHT_BYTES * shape.params
    if shards > 1:
        # FSDP full sharding (recipes/distributed.py): each GPU holds 1/N of the weights, gradients
        # and optimizer state, and gathers one decoder layer's full weights at a time (two with
        # prefetch) to compute it; the activations of its own micro-batch are not sharded.
        layer = 2 * WEIGHT_BYTES * shape.params // max(shape.layers, 1)
        states = states // shards + layer
    # A layer's intermediates, bf16: ~10 d for the mixer (in_proj's 3 d, the gated products, the
    # conv or attention output, out_proj's input) and 4 ff for the gated MLP (w1, w3, silu, product),
    # plus 2 d for the two norms' inputs.
    per_layer = tokens * (12 * shape.hidden + 4 * shape.intermediate) * 2
    if checkpointing:
        # each layer keeps only its bf16 input; the layer being recomputed holds its intermediates
        activations = shape.layers * tokens * shape.hidden * 2 + per_layer
    else:
        activations = shape.layers * per_layer
    logit_tokens = min(tokens, FUSED_LOSS_CHUNK_TOKENS) if fused_loss else tokens
    logits = logit_tokens * shape.vocab * LOGIT_BYTES_PER_ELEMENT
    parts = {
        "weights_grads_optimizer": states,
        "activations": activations,
        "logits": logits,
        "cuda_context": CUDA_CONTEXT_BYTES,
    }
    total = int(sum(parts.values()) * FRAGMENTATION)
    return MemoryEstimate(total, parts)


def fit_on(gpu: GpuClass, memory: MemoryEstimate) -> tuple[bool, str | None]:
    if memory.total_gib <= gpu.memory_gib:
        return True, None
    biggest = max(memory.parts, key=lambda k: memory.parts[k])
    return False, (
        f"needs ~{memory.total_gib:.1f} GiB, {gpu.name} has {gpu.memory_gib:.0f} GiB; "
        f"the largest part is {biggest} ({memory.parts[biggest] / GIB:.1f} GiB): "
        "lower batch_size or the row length, or use LoRA"
    )


def seconds_for(flops: float, effective_flops_per_s: float, steps: int, step_overhead_s: float) -> float:
    """Wall time: FLOPs at a sustained rate, plus a fixed per-step cost (optimizer, logging)."""
    return flops / effective_flops_per_s + steps * step_overhead_s


def steps_for(rows: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(rows / batch_size)


def train_seconds(flops: float, steps: int, compute: str, throughput: Any, gpus: int = 1) -> float:
    """Training wall time on `compute` ("cpu" or a GPU class) under the price book's throughput
    assumptions: the CPU's sustained rate, or a GPU's datasheet peak times the assumed MFU, times
    `gpus` (data parallel: each takes 1/gpus of every step's rows; the per-step cost stays)."""
    t = throughput
    if compute == "cpu":
        return seconds_for(flops, t.cpu_effective_tflops * 1e12, steps, t.cpu_step_overhead_s)
    gpu = next(g for g in GPU_CLASSES if g.name == compute)
    return seconds_for(flops, gpu.bf16_tflops * 1e12 * t.gpu_mfu * gpus, steps, t.gpu_step_overhead_s)
