"""The full-parameter SFT recipe on a tiny random LFM2: a real run, resume, a finished rerun, the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from domain.job_config import Hyperparameters
from recipes.full_sft import FULL_SFT_LR, FullSFTConfig, main, train
from recipes.lora_sft import LoraSFTConfig
from recipes.training_common import ResolvedHyperparameters, latest_checkpoint
from tests.recipes.conftest import sentiment_rows, write_jsonl


def config(tiny_lfm2: Path, tmp_path: Path, **overrides: Any) -> FullSFTConfig:
    fields: dict[str, Any] = {
        "base_model_dir": tiny_lfm2,
        "train_file": write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32)),
        "output_dir": tmp_path / "run",
        "hyperparameters": Hyperparameters(batch_size=8),
        "base_learning_rate": 1e-3,  # a random 4M model needs big steps to move in 20 of them
        "max_length": 128,
        "logging_steps": 5,
    }
    return FullSFTConfig(**(fields | overrides))


class Recorder(TrainerCallback):
    """Stands in for the worker's callbacks: records the steps it sees."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.steps: list[int] = []
        self.stop_at = stop_at

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.steps.append(state.global_step)
        if state.global_step == self.stop_at:
            control.should_training_stop = True  # the worker's cooperative cancel
        return control


def test_short_run_learns_and_writes_a_loadable_full_model(tiny_lfm2: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    eval_file = write_jsonl(tmp_path / "eval.jsonl", sentiment_rows(8))
    recorder = Recorder()
    result = train(config(tiny_lfm2, tmp_path, eval_file=eval_file, max_steps=20, save_steps=20), [recorder])

    assert result.steps == 20 and not result.stopped_early
    assert recorder.steps == list(range(1, 21))
    first, last = result.loss_history[0][1], result.loss_history[-1][1]
    assert last < 0.5 * first, result.loss_history
    assert result.eval_loss is not None and result.eval_loss < first
    assert result.target_modules == "all" and result.adapter_dir is None
    assert result.trainable_params == result.total_params > 3_000_000  # every weight, not an adapter
    assert result.hyperparameters == ResolvedHyperparameters(n_epochs=4, batch_size=8, learning_rate=1e-3)
    assert 32 * 20 * result.epochs < result.trained_tokens < 32 * 60 * result.epochs
    assert not (tmp_path / "run" / "adapter").exists()

    assert result.merged_dir is not None
    tok: Any = AutoTokenizer.from_pretrained(result.merged_dir)
    assert not re.search(r"\{%-?\s*(end)?generation", tok.chat_template)  # llama.cpp-safe template
    merged: Any = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert merged.dtype == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    base = load_file(tiny_lfm2 / "model.safetensors")
    trained = load_file(result.merged_dir / "model.safetensors")
    changed = [k for k in base if not torch.equal(base[k].float(), trained[k].float())]
    assert len(changed) > 0.9 * len(base)  # full fine-tuning moved (almost) every tensor
    messages = [
        {"role": "system", "content": "Classify the sentiment of the review."},
        {"role": "user", "content": "Review: great product"},
    ]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = merged.generate(**ids, max_new_tokens=4, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1] :]) == "positive<|im_end|>"


def test_resume_continues_the_global_step(tiny_lfm2: Path, tmp_path: Path) -> None:
    first = train(config(tiny_lfm2, tmp_path, max_steps=6, save_steps=3))
    assert first.steps == 6
    checkpoints = tmp_path / "run" / "checkpoints"
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-6"

    recorder = Recorder()
    second = train(config(tiny_lfm2, tmp_path, max_steps=10, save_steps=3), [recorder])
    assert recorder.steps == [7, 8, 9, 10]  # picked up at step 7, not 1
    assert second.steps == 10
    assert [s for s, _ in first.loss_history] == [5, 6]  # the last step is always logged
    assert [s for s, _ in second.loss_history] == [5, 6, 10]  # history carried over from the checkpoint

    # A rerun of a finished job (say the worker died while saving) trains nothing and re-saves the
    # checkpoint's weights.
    from safetensors.torch import load_file

    assert second.merged_dir is not None
    trained = load_file(second.merged_dir / "model.safetensors")
    shutil.rmtree(tmp_path / "run" / "merged")
    again = Recorder()
    third = train(config(tiny_lfm2, tmp_path, max_steps=10, save_steps=3), [again])
    assert again.steps == [] and third.steps == 10 and not third.stopped_early
    assert third.merged_dir is not None
    restored = load_file(third.merged_dir / "model.safetensors")
    assert restored.keys() == trained.keys()
    assert all(restored[k].equal(trained[k]) for k in trained)


def test_stop_request_saves_a_resumable_checkpoint(tiny_lfm2: Path, tmp_path: Path) -> None:
    stopped = train(config(tiny_lfm2, tmp_path, max_steps=20, save_steps=50), [Recorder(stop_at=3)])
    assert stopped.stopped_early and stopped.steps == 3 and stopped.merged_dir is None
    assert not (tmp_path / "run" / "merged").exists()

    recorder = Recorder()
    resumed = train(config(tiny_lfm2, tmp_path, max_steps=4, save_steps=50), [recorder])
    assert recorder.steps == [4] and not resumed.stopped_early
    assert resumed.merged_dir is not None and (resumed.merged_dir / "model.safetensors").is_file()


def test_cli_runs_from_yaml_with_overrides(
    tiny_lfm2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(8))
    config_file = tmp_path / "full.yaml"
    config_file.write_text(
        f"base_model_dir: {tiny_lfm2}\ntrain_file: {train_file}\noutput_dir: {tmp_path / 'cli'}\n"
    )
    overrides = ["max_steps=2", "hyperparameters.batch_size=4", "base_learning_rate=3e-5"]
    main(["--config", str(config_file), *overrides])
    printed = capsys.readouterr().out  # Trainer's log lines, then the result as indented JSON
    out = json.loads(printed[printed.index('{\n  "steps"') :])
    assert out["steps"] == 2 and out["adapter_dir"] is None
    assert out["hyperparameters"] == {"n_epochs": 13, "batch_size": 4, "learning_rate": 3e-5}
    assert (tmp_path / "cli" / "merged" / "model.safetensors").is_file()


def test_example_config_is_valid_and_its_rate_is_far_below_loras() -> None:
    configs = Path(__file__).parents[2] / "recipes" / "configs"
    full = FullSFTConfig.from_yaml(configs / "full_sft.yaml")
    lora = LoraSFTConfig.from_yaml(configs / "lora_sft.yaml")
    assert full.base_learning_rate == FULL_SFT_LR == 2e-5
    assert 1e-5 <= FullSFTConfig.model_fields["base_learning_rate"].default <= 5e-5
    assert full.base_learning_rate <= lora.base_learning_rate / 10
    assert full.hyperparameters.n_epochs == "auto"
