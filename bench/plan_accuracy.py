"""How far off is the plan? Estimate a LoRA run with the plan's own functions, run it for real
with the recipe the worker runs, and print both with the error in %.

    .venv/bin/python -m bench.plan_accuracy [--model HuggingFaceTB/SmolLM2-135M-Instruct] [--rows 64]

CPU by default (the price book's cpu throughput); on a GPU the recipe runs in bf16 and the
estimate uses the GPU class in EDGETUNE_WORKER_COMPUTE (e.g. h100-80gb).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

SYSTEM = "Classify the sentiment of the review. Answer with exactly one of: positive, negative."
REVIEWS = [
    ("I love this product, the quality is great and it arrived early", "positive"),
    ("Terrible. It broke after a day and support never answered", "negative"),
    ("Excellent price, great service, would buy again", "positive"),
    ("Awful screen, bad battery, returned it the same week", "negative"),
]


class TrainClock(TrainerCallback):
    """Wall time from the first to the last optimizer step (model load and merge excluded)."""

    seconds = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds = time.perf_counter() - self._t0


def rows(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        text, label = REVIEWS[i % len(REVIEWS)]
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{text} (order {i})"},
            {"role": "assistant", "content": label},
        ]
        out.append({"messages": msgs})
    return out


def estimate(model_dir: Path, data: list[dict[str, Any]], hp: Any, steps: int) -> dict[str, float]:
    from domain.job_config import LoraSettings
    from infra.price_book import price_book
    from infra.settings import get_settings
    from recipes.estimate import ModelShape, train_seconds, training_flops
    from recipes.token_count import count_tokens
    from recipes.training_common import count_lora_params

    stats = count_tokens(model_dir, data, 512)
    shape = ModelShape.from_dir(model_dir)
    trainable, _ = count_lora_params(model_dir, LoraSettings())
    flops = training_flops(shape, "lora", stats.tokens * hp.n_epochs, round(stats.mean))
    secs = train_seconds(flops, steps, get_settings().worker_compute, price_book().throughput)
    return {
        "tokens": stats.tokens * hp.n_epochs,
        "train_seconds": secs,
        "flops": flops,
        "trainable": trainable,
    }


def main() -> None:
    from domain.job_config import Hyperparameters
    from infra.settings import get_settings
    from recipes.base_models import find_base_model, resolve_base_model
    from recipes.lora_sft import LoraSFTConfig, resolve_hyperparameters, train

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4)
    args = p.parse_args()

    s = get_settings()
    model_dir = resolve_base_model(args.model, s.models_dir, s.model_cache_dir)
    info = find_base_model(args.model, s.models_dir, s.model_cache_dir)
    assert info is not None
    data = rows(args.rows)
    hp_in = Hyperparameters(n_epochs=args.epochs, batch_size=args.batch_size)
    hp = resolve_hyperparameters(len(data), hp_in, info.recommended_lr)
    steps = hp.n_epochs * -(-len(data) // hp.batch_size)
    est = estimate(model_dir, data, hp, steps)

    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.jsonl"
        train_file.write_text("".join(json.dumps(r) + "\n" for r in data))
        cfg = LoraSFTConfig(
            base_model_dir=model_dir,
            train_file=train_file,
            output_dir=Path(tmp) / "run",
            hyperparameters=hp_in,
            base_learning_rate=info.recommended_lr,
            save_steps=10_000,
        )
        clock = TrainClock()
        result = train(cfg, callbacks=[clock])
    # the recipe's own clock includes loading the model and saving the merge; the plan's train
    # estimate is the optimizer steps alone, so compare against the trainer's begin-to-end time
    measured = {
        "tokens": result.trained_tokens,
        "train_seconds": clock.seconds,
        "trainable": result.trainable_params,
    }
    report = {
        "model": args.model,
        "rows": len(data),
        "steps": steps,
        "compute": s.worker_compute,
        "estimate": est,
        "measured": measured,
        "error_pct": {
            k: round(100 * (est[k] - measured[k]) / measured[k], 1)
            for k in ("tokens", "train_seconds", "trainable")
        },
    }
    print(json.dumps(report, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
