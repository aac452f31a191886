"""A full fine-tune sharded over 2 GPUs of one node (FSDP2 full shard; `pytest -m gpu` on a machine
with at least 2 CUDA GPUs, never in CI): the same recipe command as tests/recipes/test_distributed.py
runs on 1 GPU and on 2, the 2-GPU run's plan says FSDP, and its loss curve and saved weights follow
the 1-GPU run's (bf16 on GPUs, and the sharded all-reduce sums in another order: a looser bound
than the CPU test's). The CPU test proves the launch, data split and saving on gloo; this is what
proves the sharding itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.recipes.test_distributed import _run, eight_steps

pytestmark = pytest.mark.gpu


def test_a_full_fine_tune_sharded_on_two_gpus_trains_as_on_one(tiny_lfm2: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    assert torch.cuda.device_count() >= 2, "this test needs a node with 2 CUDA GPUs"
    cfg = eight_steps(tiny_lfm2, tmp_path)
    one, one_dir = _run("full_sft", cfg, tmp_path, 1)
    two, two_dir = _run("full_sft", cfg, tmp_path, 2)

    assert two["speed_plan"]["processes"] == 2 and two["speed_plan"]["sharded"] is True
    assert two["speed_plan"]["device"] == "cuda"
    assert [s for s, _ in two["loss_history"]] == [s for s, _ in one["loss_history"]] == [2, 4, 6, 8]
    for (_, a), (_, b) in zip(one["loss_history"], two["loss_history"], strict=True):
        assert b == pytest.approx(a, rel=0.02, abs=0.02)
    assert one["loss_history"][-1][1] < 0.7 * one["loss_history"][0][1]
    # rank 0 gathered every shard and saved the whole model, close to the one-GPU run's
    a = load_file(Path(one_dir) / "merged" / "model.safetensors")
    b = load_file(Path(two_dir) / "merged" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-2
