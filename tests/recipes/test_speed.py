"""recipes.speed: the fast path's choices from the memory model, and that it trains the same thing.

The GPU side (LFM2 packed with the causal-conv1d kernel, the real speed) is in test_speed_gpu.py and
bench/recipes_throughput.py; here a CPU checks the arithmetic of the plan, that a padding-free packed
batch gives each row exactly the loss it has alone, and that a fast run's loss curve follows the
reference run's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from domain.job_config import Hyperparameters, LoraSettings
from recipes import lora_sft, speed
from recipes.chat_data import TEMPLATES_DIR
from recipes.estimate import GIB, ModelShape, peak_memory
from recipes.speed import plan_speed, speed_args
from tests.recipes.conftest import sentiment_rows, write_jsonl
from tests.support.tiny_llama import build_tiny_llama

CHATML = (TEMPLATES_DIR / "chatml.jinja").read_text()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", CHATML)


@pytest.fixture()
def lfm2_1b(tmp_path: Path) -> Path:
    """A config-only LFM2-1.2B directory: the plan reads the shape, never the weights."""
    from transformers import Lfm2Config

    layer_types = ["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)]
    Lfm2Config(
        vocab_size=65536, hidden_size=2048, intermediate_size=12288, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, layer_types=layer_types,
    ).save_pretrained(tmp_path)
    return tmp_path


def on_gpu(monkeypatch: pytest.MonkeyPatch, free_gib: float, modules: set[str]) -> None:
    monkeypatch.setattr(speed, "gpu_free_bytes", lambda: int(free_gib * GIB))
    monkeypatch.setattr(speed, "module_available", lambda name: name in modules)


# ---- the plan -----------------------------------------------------------------------------------


def test_auto_on_a_cpu_keeps_the_reference_settings(tiny_llama: Path) -> None:
    plan = plan_speed("auto", cuda=False, model_dir=tiny_llama, recipe="sft", method="lora",
                      batch_size=8, max_length=512, mean_row_tokens=100)
    assert not plan.fast and plan.micro_batch_size == 8 and plan.grad_accum == 1
    assert not plan.activation_checkpointing and not plan.padding_free and not plan.length_grouped
    args = speed_args(plan)
    assert "optim" not in args and "packing" not in args and "train_sampling_strategy" not in args


def test_reference_on_a_gpu_is_the_old_gpu_path(lfm2_1b: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_gpu(monkeypatch, 130, {"causal_conv1d", "flash_attn"})
    plan = plan_speed("reference", cuda=True, model_dir=lfm2_1b, recipe="sft", method="full",
                      batch_size=16, max_length=2048, mean_row_tokens=400)
    assert plan.activation_checkpointing and plan.micro_batch_size == 16 and not plan.padding_free


def test_big_gpu_drops_checkpointing_and_accumulation(lfm2_1b: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_gpu(monkeypatch, 130, set())
    plan = plan_speed("auto", cuda=True, model_dir=lfm2_1b, recipe="sft", method="lora",
                      batch_size=8, max_length=1024, trainable=10_000_000)
    assert plan.fast and not plan.activation_checkpointing
    assert (plan.micro_batch_size, plan.grad_accum) == (8, 1)
    assert plan.length_grouped and not plan.padding_free  # LFM2 without the kernel
    assert plan.estimated_peak_gib is not None and plan.estimated_peak_gib < 130 * speed.MEMORY_HEADROOM


def test_tight_gpu_splits_the_batch_and_the_worst_case_fits(
    lfm2_1b: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_gpu(monkeypatch, 40, set())
    plan = plan_speed("auto", cuda=True, model_dir=lfm2_1b, recipe="sft", method="full",
                      batch_size=32, max_length=2048)
    assert plan.micro_batch_size * plan.grad_accum == 32 and plan.grad_accum > 1
    worst = peak_memory(
        ModelShape.from_dir(lfm2_1b), "full", plan.micro_batch_size, 2048,
        checkpointing=plan.activation_checkpointing, fused_loss=True,
    )
    assert worst.total_bytes <= 40 * GIB * speed.MEMORY_HEADROOM
    # without checkpointing the chosen micro-batch would not fit, or it would be the fastest choice
    if plan.activation_checkpointing:
        plain = peak_memory(ModelShape.from_dir(lfm2_1b), "full", plan.micro_batch_size, 2048,
                            checkpointing=False, fused_loss=True)
        assert plain.total_bytes > 40 * GIB * speed.MEMORY_HEADROOM


def test_padding_free_needs_the_kernel_for_lfm2_and_varlen_attention_on_gpu(
    lfm2_1b: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common: dict[str, Any] = {"cuda": True, "model_dir": lfm2_1b, "recipe": "sft", "method": "lora",
                              "batch_size": 16, "max_length": 2048, "mean_row_tokens": 512.0}
    on_gpu(monkeypatch, 130, {"causal_conv1d"})
    assert not plan_speed("auto", **common).padding_free  # SDPA would attend across the whole pack
    on_gpu(monkeypatch, 130, {"causal_conv1d", "flash_attn"})
    plan = plan_speed("auto", **common)
    # 16 rows of ~512 tokens a step = 4 packs of 2048: the same rows and tokens per step
    assert plan.padding_free and plan.micro_batch_size * plan.grad_accum == 4
    assert speed_args(plan)["packing"] is True and speed_args(plan)["optim"] == "adamw_torch_fused"
    on_gpu(monkeypatch, 130, {"causal_conv1d", "flash_attn"})
    assert not plan_speed("auto", **(common | {"recipe": "dpo"})).padding_free  # DPO pads its pairs


def test_fast_on_a_cpu_packs_an_attention_only_model(tiny_llama: Path) -> None:
    plan = plan_speed("fast", cuda=False, model_dir=tiny_llama, recipe="sft", method="lora",
                      batch_size=8, max_length=128, mean_row_tokens=32.0)
    assert plan.padding_free and plan.micro_batch_size == 2 and plan.grad_accum == 1
    assert not plan.activation_checkpointing


# ---- packing is exact ---------------------------------------------------------------------------


def per_row_losses(
    model: Any, batch: dict[str, torch.Tensor], forward_positions: bool = True, extra: tuple[str, ...] = ()
) -> list[float]:
    """Mean next-token loss of each row, from one forward pass over `batch` (flattened or padded).
    `forward_positions=False` runs a flattened batch without its position_ids (rows see each other);
    `extra` names more batch keys the forward takes (LFM2's seq_idx)."""
    keys = ("input_ids", "attention_mask", *extra) + (("position_ids",) if forward_positions else ())
    # use_cache=False as TRL's training forward: with a cache transformers never reads packed
    # sequences off position_ids, and the rows would attend to each other
    logits = model(**{k: v for k, v in batch.items() if k in keys}, use_cache=False).logits.float()
    labels = batch["labels"]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none", ignore_index=-100
    )
    if "position_ids" in batch:  # padding-free: split the flattened row where positions restart
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [labels.shape[1]]
        out = []
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            keep = labels[0, a + 1 : b] != -100
            out.append(float(losses[0, a : b - 1][keep].mean()))
        return out
    keep = labels[:, 1:] != -100
    return [float(losses[i][keep[i]].mean()) for i in range(labels.shape[0])]


def test_a_packed_batch_gives_each_row_its_own_loss(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    rows = [torch.randint(20, vocab, (n,), generator=gen).tolist() for n in (17, 5, 40, 23)]
    examples = [{"input_ids": r} for r in rows]
    packed = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    assert packed["input_ids"].shape == (1, sum(map(len, rows))) and "seq_idx" in packed
    with torch.no_grad():
        together = per_row_losses(model, packed)
        alone = [per_row_losses(model, DataCollatorForLanguageModeling(pad_token_id=0)([e]))[0]
                 for e in examples]
        mixed = per_row_losses(model, packed, forward_positions=False)
    assert together == pytest.approx(alone, abs=1e-5)
    # the check can fail: without position_ids every later row attends to the rows before it
    assert all(abs(m - a) > 1e-4 for m, a in zip(mixed[1:], alone[1:], strict=True))


# ---- the fast path trains what the reference trains ---------------------------------------------


def run(tiny_llama: Path, tmp_path: Path, mode: str) -> lora_sft.TrainResult:
    rows = sentiment_rows(32)
    cfg = lora_sft.LoraSFTConfig(
        base_model_dir=tiny_llama,
        train_file=write_jsonl(tmp_path / "train.jsonl", rows),
        output_dir=tmp_path / mode,
        hyperparameters=Hyperparameters(batch_size=8, n_epochs=3),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
        base_learning_rate=3e-3,
        max_length=128,
        logging_steps=1,
        speed=mode,  # type: ignore[arg-type]
    )
    return lora_sft.train(cfg)


def test_fast_path_loss_curve_follows_the_reference(tiny_llama: Path, tmp_path: Path) -> None:
    ref, fast = run(tiny_llama, tmp_path, "reference"), run(tiny_llama, tmp_path, "fast")
    assert fast.speed_plan is not None and fast.speed_plan.padding_free
    assert ref.speed_plan is not None and not ref.speed_plan.fast
    # the same data and epochs: the same trained tokens, about the same optimizer steps
    assert fast.trained_tokens == pytest.approx(ref.trained_tokens, rel=0.02)
    assert abs(fast.steps - ref.steps) <= max(1, ref.steps // 6)
    ref_curve, fast_curve = dict(ref.loss_history), dict(fast.loss_history)
    first, last = ref.loss_history[0][1], ref.loss_history[-1][1]
    assert last < first * 0.7  # the reference learned, so the comparison means something
    for step in sorted(set(ref_curve) & set(fast_curve))[1:]:
        # within noise: a tenth of the loss, or 0.15 nats once the loss is small
        assert fast_curve[step] == pytest.approx(ref_curve[step], rel=0.1, abs=0.15), step
    assert fast.train_loss is not None and ref.train_loss is not None
    assert math.isfinite(fast.train_loss)
    summary = json.loads(fast.model_dump_json())
    assert summary["speed_plan"]["padding_free"] is True


def test_fast_dpo_groups_pairs_by_length(tiny_lfm2: Path, tmp_path: Path) -> None:
    """DPO's tokenized pairs have no input_ids column: the recipe gives the sampler their lengths."""
    from recipes import dpo

    rows = sentiment_rows(16)
    pairs = [
        {"prompt": r["messages"][:2], "chosen": r["messages"][2:],
         "rejected": [{"role": "assistant", "content": "neutral " * (1 + i % 5)}]}
        for i, r in enumerate(rows)
    ]
    cfg = dpo.DPORecipeConfig(
        base_model_dir=tiny_lfm2, train_file=write_jsonl(tmp_path / "pairs.jsonl", pairs),
        output_dir=tmp_path / "dpo", hyperparameters=Hyperparameters(batch_size=4, n_epochs=1),
        max_length=128, speed="fast",
    )
    result = dpo.train(cfg)
    plan = result.training.speed_plan
    assert plan is not None and plan.length_grouped and not plan.padding_free
    assert result.training.steps == 4 and result.training.merged_dir is not None


def test_the_plan_and_the_recipe_make_the_same_choice(lfm2_1b: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's plan calls fit_micro_batch with a GPU class's memory; the recipe calls it with the
    GPU's free memory: on the same memory they agree."""
    from recipes.speed import MEMORY_HEADROOM, fit_micro_batch

    on_gpu(monkeypatch, 79.1, set())
    plan = plan_speed("auto", cuda=True, model_dir=lfm2_1b, recipe="sft", method="full",
                      batch_size=16, max_length=2048)
    fit = fit_micro_batch(ModelShape.from_dir(lfm2_1b), "full", 16, 2048, trainable=0, sequences_per_row=1,
                          reference_copy=False, fused_loss=True, budget=int(79.1 * GIB * MEMORY_HEADROOM))
    assert fit is not None and (plan.micro_batch_size, plan.activation_checkpointing) == fit[:2]


def test_planned_steps_count_accumulation_as_trainer_does() -> None:
    """The resume check's planned last step: ceil(ceil(rows / micro) / accum) per epoch."""
    from types import SimpleNamespace

    from recipes.training_common import ResolvedHyperparameters, planned_steps

    hp = ResolvedHyperparameters(n_epochs=3, batch_size=16, learning_rate=1e-4)
    trainer = SimpleNamespace(
        args=SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=4, world_size=1),
        train_dataset=list(range(70)),  # 18 micro-batches -> 5 optimizer steps an epoch
    )
    assert planned_steps(trainer, None, hp) == 15
    assert planned_steps(trainer, 7, hp) == 7
    # 2 processes of 2 rows a micro-batch: each process runs ceil(70 / 4) = 18 micro-batches
    trainer.args = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=4, world_size=2)
    assert planned_steps(trainer, None, hp) == 15
