"""The LoRA SFT recipe on a tiny random LFM2: hyperparameters, targets, a real run, resume, stop."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from domain.job_config import Hyperparameters, LoraSettings
from recipes.base_models import LFM2_LORA_TARGETS
from recipes.lora_sft import (
    LoraSFTConfig,
    ResolvedHyperparameters,
    check_targets,
    latest_checkpoint,
    main,
    resolve_hyperparameters,
    train,
)
from tests.recipes.conftest import sentiment_rows, write_jsonl


def config(tiny_lfm2: Path, tmp_path: Path, **overrides: Any) -> LoraSFTConfig:
    fields: dict[str, Any] = {
        "base_model_dir": tiny_lfm2,
        "train_file": write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32)),
        "output_dir": tmp_path / "run",
        "hyperparameters": Hyperparameters(batch_size=8),
        "lora": LoraSettings(r=8, alpha=16, dropout=0.0),
        "base_learning_rate": 3e-3,  # a random 4M model needs big steps to move in 30 of them
        "max_length": 128,
        "logging_steps": 5,
    }
    return LoraSFTConfig(**(fields | overrides))


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


# ---- hyperparameters ----------------------------------------------------------------------------


def test_auto_hyperparameters_follow_dataset_size() -> None:
    auto = Hyperparameters()
    assert resolve_hyperparameters(10, auto, 2e-4) == ResolvedHyperparameters(
        n_epochs=10, batch_size=4, learning_rate=2e-4
    )
    assert resolve_hyperparameters(32, auto, 2e-4).n_epochs == 4  # 32 x 4 >= 100 examples seen
    assert resolve_hyperparameters(1000, auto, 2e-4) == ResolvedHyperparameters(
        n_epochs=3, batch_size=4, learning_rate=2e-4
    )
    big = resolve_hyperparameters(20_000, auto, 2e-4)
    assert (big.n_epochs, big.batch_size) == (1, 40)
    assert resolve_hyperparameters(2, auto, 2e-4).batch_size == 2  # never larger than the dataset
    assert resolve_hyperparameters(100_000, auto, 2e-4).batch_size == 64


def test_explicit_hyperparameters_win() -> None:
    hp = Hyperparameters(n_epochs=2, batch_size=16, learning_rate_multiplier=0.5)
    assert resolve_hyperparameters(500, hp, 4e-4) == ResolvedHyperparameters(
        n_epochs=2, batch_size=16, learning_rate=2e-4
    )
    with pytest.raises(ValueError):
        resolve_hyperparameters(0, hp, 4e-4)


# ---- LoRA targets -------------------------------------------------------------------------------


def test_bad_target_module_is_a_value_error(tiny_lfm2: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lfm2)
    check_targets(model, LFM2_LORA_TARGETS)
    check_targets(model, "all-linear")
    with pytest.raises(ValueError, match=r"'o_proj' matches no Linear layer.*Linear layers here: .*out_proj"):
        check_targets(model, ["q_proj", "o_proj"])  # a Llama name: PEFT alone would silently skip it
    with pytest.raises(ValueError, match=r"'conv' .*Lfm2ShortConv"):
        check_targets(model, ["conv"])
    with pytest.raises(ValueError, match="'gate_proj'"):
        train(config(tiny_lfm2, tmp_path, lora=LoraSettings(target_modules=["gate_proj"]), max_steps=1))
    assert not (tmp_path / "run" / "checkpoints").exists()  # rejected before any training


# ---- a real run ---------------------------------------------------------------------------------


def test_short_run_learns_and_writes_loadable_models(tiny_lfm2: Path, tmp_path: Path) -> None:
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    eval_file = write_jsonl(tmp_path / "eval.jsonl", sentiment_rows(8))
    recorder = Recorder()
    result = train(config(tiny_lfm2, tmp_path, eval_file=eval_file, max_steps=30, save_steps=15), [recorder])

    assert result.steps == 30 and not result.stopped_early
    assert recorder.steps == list(range(1, 31))  # the caller's callbacks ran on every step
    first, last = result.loss_history[0][1], result.loss_history[-1][1]
    assert last < 0.5 * first, result.loss_history
    assert result.eval_loss is not None and result.eval_loss < first
    assert result.target_modules == sorted(LFM2_LORA_TARGETS)
    assert 0 < result.trainable_params < 0.1 * result.total_params
    assert result.hyperparameters == ResolvedHyperparameters(n_epochs=4, batch_size=8, learning_rate=3e-3)
    assert result.epochs == pytest.approx(30 / 4)  # 32 rows / batch 8 = 4 steps per epoch
    assert 32 * 20 * result.epochs < result.trained_tokens < 32 * 60 * result.epochs
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-15",
        "checkpoint-30",
    ]

    assert result.adapter_dir is not None and result.merged_dir is not None
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    adapter = AutoPeftModelForCausalLM.from_pretrained(result.adapter_dir)
    assert adapter.peft_config["default"].r == 8

    tok: Any = AutoTokenizer.from_pretrained(result.merged_dir)
    assert not re.search(r"\{%-?\s*(end)?generation", tok.chat_template)  # llama.cpp-safe template
    merged: Any = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert merged.dtype == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    answers = []
    for review in ["great product", "awful quality"]:
        messages = [
            {"role": "system", "content": "Classify the sentiment of the review."},
            {"role": "user", "content": f"Review: {review}"},
        ]
        ids = tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        out = merged.generate(**ids, max_new_tokens=4, do_sample=False)
        answers.append(tok.decode(out[0, ids["input_ids"].shape[1] :]))
    assert answers == ["positive<|im_end|>", "negative<|im_end|>"]


def test_resume_continues_the_global_step(tiny_lfm2: Path, tmp_path: Path) -> None:
    first = train(config(tiny_lfm2, tmp_path, max_steps=6, save_steps=3))
    assert first.steps == 6
    assert (
        latest_checkpoint(tmp_path / "run" / "checkpoints")
        == tmp_path / "run" / "checkpoints" / "checkpoint-6"
    )

    recorder = Recorder()
    second = train(config(tiny_lfm2, tmp_path, max_steps=10, save_steps=3), [recorder])
    assert recorder.steps == [7, 8, 9, 10]  # picked up at step 7, not 1
    assert second.steps == 10
    assert [s for s, _ in first.loss_history] == [5, 6]  # the last step is always logged
    assert [s for s, _ in second.loss_history] == [5, 6, 10]  # history carried over from the checkpoint

    # A rerun of a finished job (say the worker died while merging) trains nothing and re-saves.
    from safetensors.torch import load_file

    assert second.adapter_dir is not None
    trained = load_file(second.adapter_dir / "adapter_model.safetensors")
    shutil.rmtree(tmp_path / "run" / "merged")
    again = Recorder()
    third = train(config(tiny_lfm2, tmp_path, max_steps=10, save_steps=3), [again])
    assert again.steps == [] and third.steps == 10 and not third.stopped_early
    assert third.merged_dir is not None and (third.merged_dir / "model.safetensors").is_file()
    assert third.adapter_dir is not None
    restored = load_file(third.adapter_dir / "adapter_model.safetensors")
    assert restored.keys() == trained.keys()
    assert all(restored[k].equal(trained[k]) for k in trained)

    fresh = Recorder()
    train(config(tiny_lfm2, tmp_path, max_steps=2, resume=False, output_dir=tmp_path / "other"), [fresh])
    assert fresh.steps == [1, 2]


def test_stop_request_saves_a_resumable_checkpoint(tiny_lfm2: Path, tmp_path: Path) -> None:
    stopped = train(config(tiny_lfm2, tmp_path, max_steps=20, save_steps=50), [Recorder(stop_at=4)])
    assert stopped.stopped_early and stopped.steps == 4
    assert stopped.loss_history[-1][0] == 4 and stopped.train_loss is not None
    assert stopped.adapter_dir is None and not (tmp_path / "run" / "merged").exists()
    assert (
        latest_checkpoint(tmp_path / "run" / "checkpoints")
        == tmp_path / "run" / "checkpoints" / "checkpoint-4"
    )

    recorder = Recorder()
    resumed = train(config(tiny_lfm2, tmp_path, max_steps=6, save_steps=50), [recorder])
    assert recorder.steps == [5, 6] and not resumed.stopped_early
    assert resumed.merged_dir is not None and (resumed.merged_dir / "model.safetensors").is_file()


def test_cli_runs_from_yaml_with_overrides(
    tiny_lfm2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(8))
    config_file = tmp_path / "sft.yaml"
    config_file.write_text(
        f"base_model_dir: {tiny_lfm2}\ntrain_file: {train_file}\noutput_dir: {tmp_path / 'cli'}\n"
        "lora:\n  r: 4\n"
    )
    main(["--config", str(config_file), "max_steps=2", "lora.r=2", "hyperparameters.batch_size=4"])
    out = capsys.readouterr().out
    assert '"steps": 2' in out and '"train_loss": null' not in out
    import json

    adapter_config = json.loads((tmp_path / "cli" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 2


def test_example_config_is_valid() -> None:
    cfg = LoraSFTConfig.from_yaml(Path(__file__).parents[2] / "recipes" / "configs" / "lora_sft.yaml")
    assert cfg.lora.target_modules is None and cfg.hyperparameters.n_epochs == "auto"
