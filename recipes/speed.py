"""How a recipe runs fast on the device it has: the one home for the speed choices.

`plan_speed` looks at the device, the model, the batch and the memory model (recipes.estimate) and
returns a `SpeedPlan`; `speed_args` turns it into the TrainingArguments keys the recipes pass to
TRL. Nothing here changes *what* is trained (rows per optimizer step, learning rate, loss), only how
a step is computed:

- **Micro-batches by token budget.** The job's batch (rows per optimizer step, OpenAI's meaning)
  is split into `micro_batch_size` rows x `grad_accum` micro-steps, the largest micro-batch whose
  worst case (every row at max_length) fits the GPU by the memory model. Trainer divides the loss
  by the step's label tokens across the micro-steps, so the gradient equals the whole batch's.
- **Activation checkpointing only when needed.** It recomputes every layer's forward in the backward
  pass (a third more FLOPs); it is switched on only when the micro-batch would not fit otherwise,
  or when without it the micro-batch would shrink below MIN_MICRO_TOKENS.
- **No padding compute.** Padding-free rows (TRL's BFD packing, `position_ids` + `seq_idx`, one
  flattened sequence per micro-batch) when the model keeps packed rows apart: attention-only models
  always; LFM2 only with the `causal-conv1d` kernel, since its reference conv path would mix
  neighbouring rows (transformers refuses it). On a GPU padding-free also needs a varlen attention
  kernel (flash-attn): under SDPA a flattened micro-batch gets one dense block-diagonal mask whose
  cost grows with the square of the *whole* micro-batch. Otherwise rows are length-grouped
  (Trainer's LengthGroupedSampler), so each padded micro-batch holds rows of similar length.
- **Fused AdamW** (one kernel for all parameters) and data loading in worker processes.

`speed="reference"` reproduces the settings before this module (padded random batches, checkpointing
on any GPU, one micro-batch), which the benchmark runs as "edgetune before". `speed="auto"` takes
the fast path on a GPU and the reference path on a CPU, where the tests and `make demo` run and
where checkpointing and grouping were never on; `speed="fast"` forces the fast path anywhere (the
correctness tests compare it with the reference on a CPU).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from domain.lists import METHODS, MethodType, TrainingType
from recipes.chat_data import model_type
from recipes.distributed import parallel_args, shards_states
from recipes.estimate import GIB, ModelShape, peak_memory

SpeedMode = Literal["auto", "fast", "reference"]
Recipe = Literal["sft", "dpo"]
# The method each recipe family trains, whose facts (domain/lists.py METHODS) size its batches.
RECIPE_METHOD: dict[Recipe, MethodType] = {"sft": "supervised", "dpo": "dpo"}

# Use at most this share of the GPU's free memory: the memory model is an estimate, and the
# allocator needs headroom for the spikes it does not model (optimizer step, eval batches).
MEMORY_HEADROOM = 0.85
# Below ~8k tokens per micro-step a 350M-1.2B model no longer fills an H100-class GPU (kernel
# launches dominate), so checkpointing a bigger micro-batch beats many tiny ones.
MIN_MICRO_TOKENS = 8192
GPU_DATALOADER_WORKERS = 2


class SpeedPlan(BaseModel):
    """How one run computes its steps; recorded in the run's result and the job's events."""

    mode: SpeedMode
    fast: bool  # the fast path was taken (auto on a GPU, or fast)
    device: Literal["cpu", "cuda"]
    micro_batch_size: int  # rows (packs when padding_free) per micro-step
    grad_accum: int
    activation_checkpointing: bool
    padding_free: bool
    length_grouped: bool
    fused_optimizer: bool
    dataloader_workers: int
    conv_kernel: bool  # causal-conv1d importable (LFM2's fast short-convolution kernel)
    varlen_attention: bool  # flash-attn importable
    estimated_peak_gib: float | None  # the memory model's peak for the chosen micro-batch (GPU only)
    reasons: list[str]
    processes: int = 1  # data-parallel processes, one per GPU (recipes/distributed.py); the rest: per process
    sharded: bool = False  # with processes > 1: FSDP full shard (full fine-tuning), else DDP


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def rank_rows(batch_size: int, processes: int) -> int:
    """One process's rows of each step: the step's rows split evenly, rounded up (a step of 5 rows
    on 2 processes trains 6), so every process runs the same micro-steps."""
    return -(-batch_size // processes)


def reference_plan(
    mode: SpeedMode, cuda: bool, batch_size: int, processes: int = 1, sharded: bool = False
) -> SpeedPlan:
    return SpeedPlan(
        processes=processes,
        sharded=sharded,
        mode=mode,
        fast=False,
        device="cuda" if cuda else "cpu",
        micro_batch_size=batch_size,
        grad_accum=1,
        activation_checkpointing=cuda,
        padding_free=False,
        length_grouped=False,
        fused_optimizer=False,
        dataloader_workers=0,
        conv_kernel=module_available("causal_conv1d"),
        varlen_attention=module_available("flash_attn"),
        estimated_peak_gib=None,
        reasons=[f"speed={mode}: the reference settings" + ("" if mode == "reference" else " on a CPU")],
    )


def packs_rows_apart(model_dir: Path, cuda: bool) -> tuple[bool, str]:
    """Can a micro-batch be flattened into one padding-free sequence here, and why (not)."""
    lfm2 = model_type(model_dir).startswith("lfm2")
    if lfm2 and not module_available("causal_conv1d"):
        return False, "LFM2 without causal-conv1d: packed rows would share conv state; length-grouped padding"
    if cuda and not module_available("flash_attn"):
        return False, "no flash-attn: SDPA would attend across a whole flattened micro-batch; length-grouped"
    return True, "padding-free rows (position_ids + seq_idx)"


def gpu_free_bytes() -> int:
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)


def fit_micro_batch(
    shape: ModelShape, method: TrainingType, batch_size: int, seq_len: int, *,
    trainable: int, sequences_per_row: int, reference_copy: bool, fused_loss: bool, budget: int,
    shards: int = 1,
) -> tuple[int, bool, float] | None:
    """(micro rows, checkpointing, estimated peak GiB) for the fastest setting that fits `budget`
    bytes at the worst case (every row at seq_len), or None when not even one row fits.
    `batch_size` is one GPU's rows per step; `shards` GPUs share the model's states (FSDP)."""

    def peak(micro: int, ckpt: bool) -> int:
        return peak_memory(
            shape, method, micro * sequences_per_row, seq_len, trainable,
            reference_copy=reference_copy, checkpointing=ckpt, fused_loss=fused_loss, shards=shards,
        ).total_bytes

    best: dict[bool, int] = {}
    for ckpt in (False, True):
        fitting = [m for m in divisors_desc(batch_size) if peak(m, ckpt) <= budget]
        if fitting:
            best[ckpt] = fitting[0]
    if not best:
        return None
    plain = best.get(False)
    enough = min(batch_size, math.ceil(MIN_MICRO_TOKENS / seq_len))
    if plain is not None and (plain >= enough or best.get(True, 0) <= plain):
        return plain, False, peak(plain, False) / GIB
    micro = best[True]
    return micro, True, peak(micro, True) / GIB


def plan_speed(
    mode: SpeedMode,
    *,
    cuda: bool,
    model_dir: Path,
    recipe: Recipe,
    method: TrainingType,
    batch_size: int,
    max_length: int,
    trainable: int = 0,
    mean_row_tokens: float | None = None,
    processes: int = 1,
) -> SpeedPlan:
    """The SpeedPlan for one run (see the module docstring for each choice).

    `mean_row_tokens` (rows as trained, truncated) lets padding-free runs keep the job's rows per
    step: BFD packing turns rows into packs of up to max_length tokens, so a step takes
    round(batch_size x mean / max_length) packs, about the same rows and tokens as batch_size rows.
    Without it, padding-free is not chosen.

    With `processes` > 1 (data parallel, recipes/distributed.py) every number here is one
    process's: it takes ceil(batch_size / processes) rows of each step, and for full fine-tuning
    its GPU holds 1/processes of the model's states (FSDP)."""
    # FSDP for full fine-tuning on GPUs; accelerate runs CPU processes as DDP (recipes/distributed.py)
    rows, sharded = rank_rows(batch_size, processes), shards_states(processes, method, cuda)
    if mode == "reference" or (mode == "auto" and not cuda):
        return reference_plan(mode, cuda, rows, processes, sharded)
    reasons: list[str] = []
    if processes > 1:
        sharding = "FSDP full shard" if sharded else "DDP"
        split = f"{rows} of each step's {rows * processes} rows each"
        reasons.append(f"{processes} processes ({sharding}): {split}")
    batch_size = rows
    packed, why = packs_rows_apart(model_dir, cuda)
    facts = METHODS[RECIPE_METHOD[recipe]]
    # rows packed without padding are chat rows; DPOTrainer pads its pairs
    padding_free = packed and facts.rows == "chat" and mean_row_tokens is not None
    reasons.append(why if recipe == "sft" else "DPO pairs: length-grouped padding")
    per_step = batch_size
    if padding_free and mean_row_tokens is not None:
        per_step = max(1, round(batch_size * mean_row_tokens / max_length))
        reasons.append(
            f"{batch_size} rows a step of ~{mean_row_tokens:.0f} tokens = {per_step} packs of {max_length}"
        )
    micro, ckpt, peak_gib = per_step, False, None
    if cuda:
        fit = fit_micro_batch(
            ModelShape.from_dir(model_dir), method, per_step, max_length,
            trainable=trainable,
            sequences_per_row=facts.sequences_per_row,  # DPO: chosen and rejected run together
            reference_copy=facts.reference_model and method == "full",
            fused_loss=not facts.reference_model,
            budget=int(gpu_free_bytes() * MEMORY_HEADROOM),
            shards=processes if method == "full" else 1,
        )
        if fit is None:
            micro, ckpt = 1, True
            reasons.append("the memory model says one row does not fit: one row per micro-step, checkpointed")
        else:
            micro, ckpt, peak_gib = fit
            unit = "packs" if padding_free else "rows"
            reasons.append(
                f"{micro} of {per_step} {unit} per micro-step x {per_step // micro}, "
                f"checkpointing {'on' if ckpt else 'off'}: ~{peak_gib:.1f} GiB at {max_length} tokens a row"
            )
    return SpeedPlan(
        mode=mode,
        fast=True,
        device="cuda" if cuda else "cpu",
        micro_batch_size=micro,
        grad_accum=per_step // micro,
        activation_checkpointing=ckpt,
        padding_free=padding_free,
        length_grouped=not padding_free,
        fused_optimizer=True,
        dataloader_workers=GPU_DATALOADER_WORKERS if cuda else 0,
        conv_kernel=module_available("causal_conv1d"),
        varlen_attention=module_available("flash_attn"),
        estimated_peak_gib=None if peak_gib is None else round(peak_gib, 2),
        reasons=reasons,
        processes=processes,
        sharded=sharded,
    )


def speed_args(plan: SpeedPlan) -> dict[str, Any]:
    """The TrainingArguments keys a SpeedPlan sets (the recipe's common args hold the rest)."""
    args: dict[str, Any] = {
        "per_device_train_batch_size": plan.micro_batch_size,
        "per_device_eval_batch_size": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.grad_accum,
        "activation_checkpointing": plan.activation_checkpointing,
        "dataloader_num_workers": plan.dataloader_workers,
        **parallel_args("full" if plan.sharded else "lora", plan.processes, plan.activation_checkpointing),
    }
    if plan.fused_optimizer:
        args["optim"] = "adamw_torch_fused"
    if plan.dataloader_workers:
        args["dataloader_persistent_workers"] = True
        args["dataloader_prefetch_factor"] = 4
    if plan.length_grouped:
        args["train_sampling_strategy"] = "group_by_length"
    if plan.padding_free:
        # BFD packing: each packed row holds whole examples (truncated at max_length), and the
        # collator flattens a micro-batch into one sequence with position_ids and seq_idx.
        args["packing"] = True
        args["packing_strategy"] = "bfd"
    return args


def describe(plan: SpeedPlan) -> str:
    """One line for the job's events: how the steps were computed."""
    where: str = plan.device
    if plan.processes > 1:
        where = f"{plan.processes} processes ({'FSDP' if plan.sharded else 'DDP'}) on {plan.device}"
    if not plan.fast:
        return f"reference path on {where}"
    rows = "packs" if plan.padding_free else "rows"
    how = "padding-free" if plan.padding_free else "length-grouped padding"
    return (
        f"fast path on {where}: {plan.micro_batch_size} {rows} per micro-step x {plan.grad_accum}, "
        f"{how}, checkpointing {'on' if plan.activation_checkpointing else 'off'}"
        + (", causal-conv1d kernel" if plan.conv_kernel else "")
    )
