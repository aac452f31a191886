"""The fast path on a real GPU (`pytest -m gpu`; never in CI): LFM2 rows packed with the
causal-conv1d kernel keep their own loss, and a fast LoRA run follows the reference run's loss.

Run on the GPU machine by bench/gpu_session.sh, after it builds the kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.recipes.conftest import LFM2_TEMPLATE
from tests.recipes.test_speed import per_row_losses, run
from tests.support.tiny_lfm2 import build_tiny_lfm2

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def tiny_lfm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lfm2(tmp_path_factory.mktemp("models") / "tiny-lfm2", LFM2_TEMPLATE)


def test_packed_lfm2_rows_keep_their_own_loss_with_the_kernel(tiny_lfm2_dir: Path) -> None:
    import causal_conv1d  # noqa: F401  (bench/gpu_session.sh builds it; a GPU worker needs it)
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model: Any = AutoModelForCausalLM.from_pretrained(tiny_lfm2_dir, dtype=torch.float32)
    model = model.to("cuda").eval()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    rows = [torch.randint(20, vocab, (n,), generator=gen).tolist() for n in (17, 5, 40, 23)]
    examples = [{"input_ids": r} for r in rows]

    def on_gpu(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    packed = on_gpu(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples))
    with torch.no_grad():
        together = per_row_losses(model, packed, extra=("seq_idx",))
        alone = [
            per_row_losses(model, on_gpu(DataCollatorForLanguageModeling(pad_token_id=0)([e])))[0]
            for e in examples
        ]
    # the kernel accumulates in fp32 like the reference path, in another order
    assert together == pytest.approx(alone, abs=2e-4)


def test_fast_lfm2_lora_follows_the_reference_on_gpu(tiny_lfm2_dir: Path, tmp_path: Path) -> None:
    ref, fast = run(tiny_lfm2_dir, tmp_path, "reference"), run(tiny_lfm2_dir, tmp_path, "auto")
    assert fast.speed_plan is not None and fast.speed_plan.fast and fast.speed_plan.device == "cuda"
    assert not fast.speed_plan.activation_checkpointing
    ref_curve, fast_curve = dict(ref.loss_history), dict(fast.loss_history)
    assert ref.loss_history[-1][1] < ref.loss_history[0][1] * 0.7
    for step in sorted(set(ref_curve) & set(fast_curve))[1:]:
        assert fast_curve[step] == pytest.approx(ref_curve[step], rel=0.1, abs=0.15), step
