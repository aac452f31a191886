"""Training on several processes of one node (recipes/distributed.py, issue 17 item 2): the recipe
command launched as 2 CPU processes (gloo) trains the same steps over the same rows as 1 process,
so its loss curve and its weights match within floating-point noise; and the memory model that
decides when a job needs several GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recipes.distributed import parallel_args
from recipes.estimate import GIB, ModelShape, peak_memory
from recipes.speed import MEMORY_HEADROOM, fit_micro_batch, plan_speed, rank_rows
from tests.recipes.conftest import sentiment_rows, write_jsonl
from tests.recipes.test_speed import lfm2_1b, on_gpu  # noqa: F401  (a fixture and a helper)

ROOT = Path(__file__).resolve().parents[2]


def _run(recipe: str, cfg: dict[str, object], tmp_path: Path, processes: int) -> tuple[dict, str]:
    """`python -m recipes.<recipe> --config ... processes=N` as a user runs it; its printed result."""
    path = tmp_path / f"{recipe}-{processes}.yaml"
    out = tmp_path / f"run-{recipe}-{processes}"
    path.write_text(yaml.safe_dump({**cfg, "output_dir": str(out)}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", f"recipes.{recipe}", "--config", str(path), f"processes={processes}"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    start = proc.stdout.rindex("\n{\n")  # the result, printed by rank 0 alone
    assert proc.stdout.count('"loss_history"') == 1
    return json.loads(proc.stdout[start:]), str(out)


def eight_steps(base: Path, tmp_path: Path) -> dict[str, object]:
    """A recipe config of 8 steps of 8 rows on 32 sentiment rows, a loss logged every 2 steps."""
    return {
        "base_model_dir": str(base),
        "train_file": str(write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32))),
        "hyperparameters": {"batch_size": 8},
        "base_learning_rate": 1e-3,
        "max_length": 128,
        "logging_steps": 2,
        "max_steps": 8,
        "save_steps": 100,
    }


@pytest.mark.parametrize("recipe", ["full_sft", "lora_sft"])
def test_two_processes_train_as_one(recipe: str, tiny_lfm2: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = eight_steps(tiny_lfm2, tmp_path)
    if recipe == "lora_sft":  # dropout draws its masks per process: without it the runs are exact
        cfg["lora"] = {"dropout": 0.0}
    one, one_dir = _run(recipe, cfg, tmp_path, 1)
    two, two_dir = _run(recipe, cfg, tmp_path, 2)

    assert two["speed_plan"]["processes"] == 2 and two["speed_plan"]["micro_batch_size"] == 4
    assert one["speed_plan"]["micro_batch_size"] == 8  # the same 8 rows a step, 4 on each process
    assert [s for s, _ in two["loss_history"]] == [s for s, _ in one["loss_history"]] == [2, 4, 6, 8]
    for (_, a), (_, b) in zip(one["loss_history"], two["loss_history"], strict=True):
        assert b == pytest.approx(a, rel=1e-4)
    assert one["loss_history"][-1][1] < 0.7 * one["loss_history"][0][1]  # it did learn
    assert two["trained_tokens"] == one["trained_tokens"]
    # rank 0 saved the whole model, equal to the one-process run's
    a = load_file(Path(one_dir) / "merged" / "model.safetensors")
    b = load_file(Path(two_dir) / "merged" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_a_full_fine_tune_too_big_for_one_gpu_fits_sharded(lfm2_1b: Path) -> None:  # noqa: F811
    """LFM2-1.2B full at 2048 tokens: its weights, gradients and AdamW state (18 bytes a parameter,
    ~20 GiB) leave no room on an L4 (22 GiB); over 2 L4s (FSDP) each holds half of them."""
    shape = ModelShape.from_dir(lfm2_1b)
    budget = int(22.0 * GIB * MEMORY_HEADROOM)
    kwargs = {"trainable": 0, "sequences_per_row": 1, "reference_copy": False, "fused_loss": True}
    assert fit_micro_batch(shape, "full", 16, 2048, budget=budget, **kwargs) is None  # type: ignore[arg-type]
    fit = fit_micro_batch(shape, "full", rank_rows(16, 2), 2048, budget=budget, shards=2, **kwargs)  # type: ignore[arg-type]
    assert fit is not None and fit[2] * GIB <= budget
    one, two = peak_memory(shape, "full", 1, 2048), peak_memory(shape, "full", 1, 2048, shards=2)
    states = one.parts["weights_grads_optimizer"]
    assert two.parts["weights_grads_optimizer"] == states // 2 + 2 * 2 * shape.params // shape.layers
    assert two.parts["activations"] == one.parts["activations"]  # each GPU still runs its own rows


def test_the_speed_plan_splits_each_step_over_the_processes(
    lfm2_1b: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_gpu(monkeypatch, 22.0, set())
    plan = plan_speed("auto", cuda=True, model_dir=lfm2_1b, recipe="sft", method="full",
                      batch_size=15, max_length=2048, processes=2)  # fmt: skip
    assert plan.processes == 2 and plan.sharded
    assert plan.micro_batch_size * plan.grad_accum == rank_rows(15, 2) == 8  # 15 rows a step become 16
    assert "2 processes (FSDP full shard)" in plan.reasons[0]
    lora = plan_speed("auto", cuda=True, model_dir=lfm2_1b, recipe="sft", method="lora",
                      batch_size=16, max_length=512, processes=2)  # fmt: skip
    assert not lora.sharded and "DDP" in lora.reasons[0]
    # the trainer arguments: FSDP2 for a sharded plan, with FSDP's own activation checkpointing
    args = parallel_args("full", 2, checkpointing=True)
    assert args["fsdp"] is True and args["fsdp_config"]["version"] == 2
    assert args["fsdp_config"]["activation_checkpointing"] and args["activation_checkpointing"] is False
    assert parallel_args("lora", 2, checkpointing=True) == {"ddp_find_unused_parameters": False}
    assert parallel_args("full", 1, checkpointing=True) == {}
