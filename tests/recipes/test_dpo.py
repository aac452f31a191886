"""The DPO recipe on a tiny random LFM2: the chosen-over-rejected margin rises (LoRA and full), resume
picks up at the checkpoint's step, both preference formats feed the same dataset, and bad rows and bad
LoRA targets fail before any training."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from domain.job_config import Hyperparameters, LoraSettings
from recipes.base_models import LFM2_LORA_TARGETS
from recipes.dpo import FULL_DPO_LR, LORA_DPO_LR, DPORecipeConfig, main, to_preference_dataset, train
from recipes.preference_data import load_preference_rows
from recipes.training_common import latest_checkpoint
from tests.recipes.conftest import sentiment_rows, write_jsonl


def preference_rows(n: int = 16) -> list[dict[str, Any]]:
    """TRL conversational rows: the right sentiment label is chosen, the wrong one rejected."""
    rows = []
    for row in sentiment_rows(n):
        label = row["messages"][-1]["content"]
        other = "negative" if label == "positive" else "positive"
        rows.append(
            {
                "prompt": row["messages"][:-1],
                "chosen": [{"role": "assistant", "content": label}],
                "rejected": [{"role": "assistant", "content": other}],
            }
        )
    return rows


def as_openai(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": {"messages": row["prompt"]},
        "preferred_output": row["chosen"],
        "non_preferred_output": row["rejected"],
    }


def config(tiny_lfm2: Path, tmp_path: Path, **overrides: Any) -> DPORecipeConfig:
    fields: dict[str, Any] = {
        "base_model_dir": tiny_lfm2,
        "train_file": write_jsonl(tmp_path / "prefs.jsonl", preference_rows(16)),
        "output_dir": tmp_path / "run",
        "hyperparameters": Hyperparameters(batch_size=8),
        "lora": LoraSettings(r=8, alpha=16, dropout=0.0),
        "base_learning_rate": 5e-3,  # a random 4M model needs big steps to move in 8 of them
        "max_length": 128,
        "logging_steps": 1,
    }
    return DPORecipeConfig(**(fields | overrides))


class Recorder(TrainerCallback):
    """Stands in for the worker's callbacks: records the steps it sees."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.steps.append(state.global_step)
        return control


def mean_margin(model_dir: Path, rows: list[dict[str, Any]]) -> float:
    """Mean over rows of log p(chosen | prompt) - log p(rejected | prompt), summed over answer tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def answer_logp(prompt: list[dict[str, str]], answer: list[dict[str, str]]) -> float:
        rendered = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)
        start = len(rendered["input_ids"])
        ids = tok.apply_chat_template(prompt + answer, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        targets = ids[0, 1:]
        return float(logps.gather(-1, targets[:, None])[start - 1 :].sum())

    margins = [answer_logp(r["prompt"], r["chosen"]) - answer_logp(r["prompt"], r["rejected"]) for r in rows]
    return sum(margins) / len(margins)


# ---- training -----------------------------------------------------------------------------------


def test_lora_dpo_raises_the_chosen_over_rejected_margin_and_resumes(tiny_lfm2: Path, tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    rows = preference_rows(16)
    before = mean_margin(tiny_lfm2, rows)
    # Half the run, then the rest: the second call must pick up at step 5, not start over.
    assert train(config(tiny_lfm2, tmp_path, max_steps=4, save_steps=4)).training.steps == 4
    recorder = Recorder()
    result = train(config(tiny_lfm2, tmp_path, max_steps=8, save_steps=4), [recorder])
    run = result.training
    assert recorder.steps == [5, 6, 7, 8] and run.steps == 8 and not run.stopped_early
    assert [s for s, _ in result.reward_margins] == list(range(1, 9))  # history carried over

    assert run.merged_dir is not None and run.adapter_dir is not None
    after = mean_margin(run.merged_dir, rows)
    assert after > before + 2.0, (before, after)  # nats; typically about +9 here
    # TRL's own view agrees: implicit rewards separate and the DPO loss falls from log 2.
    assert result.reward_margins[-1][1] > 0.2 and result.reward_accuracy is not None
    assert result.reward_accuracy >= 0.75
    assert run.loss_history[0][1] == pytest.approx(0.6931, abs=1e-3)
    assert run.loss_history[-1][1] < 0.6
    assert run.target_modules == sorted(LFM2_LORA_TARGETS)
    assert 0 < run.trainable_params < 0.1 * run.total_params
    assert result.beta == 0.1 and run.hyperparameters.learning_rate == 5e-3
    # The token count matches Trainer's own non-padding count, which (unlike TRL's `num_tokens`
    # metric) survives the resume: the prompt once per answer plus both answers.
    assert run.trained_tokens == tokens_seen(tmp_path) > 0

    adapter = AutoPeftModelForCausalLM.from_pretrained(run.adapter_dir)
    assert adapter.peft_config["default"].r == 8
    tok: Any = AutoTokenizer.from_pretrained(run.merged_dir)
    assert not re.search(r"\{%-?\s*(end)?generation", tok.chat_template)  # llama.cpp-safe template


def tokens_seen(tmp_path: Path) -> int:
    """Trainer's num_input_tokens_seen in the newest checkpoint."""
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert checkpoint is not None
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["num_input_tokens_seen"])


def test_full_dpo_trains_every_weight_and_raises_the_margin(tiny_lfm2: Path, tmp_path: Path) -> None:
    rows = preference_rows(16)
    before = mean_margin(tiny_lfm2, rows)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [as_openai(r) for r in preference_rows(4)])
    full = {"lora": None, "base_learning_rate": 1e-3, "eval_file": eval_file}
    result = train(config(tiny_lfm2, tmp_path, max_steps=6, save_steps=6, **full))
    run = result.training
    assert run.eval_loss is not None and run.eval_loss < 0.6931  # the eval pass ran (log 2 = no preference)
    assert run.adapter_dir is None and run.merged_dir is not None
    assert run.target_modules == "all" and run.trainable_params == run.total_params
    after = mean_margin(run.merged_dir, rows)
    assert after > before + 1.0, (before, after)


# ---- data and config checks ---------------------------------------------------------------------


def test_both_preference_formats_load_to_the_same_dataset(tmp_path: Path) -> None:
    rows = preference_rows(6)
    trl_file = write_jsonl(tmp_path / "trl.jsonl", rows)
    openai_file = write_jsonl(tmp_path / "openai.jsonl", [as_openai(r) for r in rows])
    trl = to_preference_dataset(load_preference_rows(trl_file))
    openai = to_preference_dataset(load_preference_rows(openai_file))
    assert trl.column_names == openai.column_names == ["prompt", "chosen", "rejected", "tools"]
    assert trl.to_list() == openai.to_list()
    assert trl[0]["chosen"] == [{"role": "assistant", "content": "positive"}]


def test_a_bad_row_fails_naming_its_line_before_any_model_loads(tmp_path: Path) -> None:
    rows: list[Any] = preference_rows(3)
    rows[1] = {**rows[1], "rejected": rows[1]["chosen"]}
    rows.append({"prompt": "Review: great product", "chosen": "positive"})
    train_file = write_jsonl(tmp_path / "prefs.jsonl", rows)
    cfg = DPORecipeConfig(
        base_model_dir=tmp_path / "no-model-here",  # loading anything from here would fail differently
        train_file=train_file,
        output_dir=tmp_path / "run",
    )
    with pytest.raises(ValueError, match=r"2 invalid preference row\(s\)") as err:
        train(cfg)
    assert "line 2: 'chosen' and 'rejected' are identical" in str(err.value)
    assert "line 4: missing 'rejected'" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_lora_target_matching_nothing_is_an_error(tiny_lfm2: Path, tmp_path: Path) -> None:
    bad = LoraSettings(target_modules=["q_proj", "gate_proj"])  # gate_proj is Llama's name, not LFM2's
    with pytest.raises(ValueError, match=r"'gate_proj' matches no Linear layer"):
        train(config(tiny_lfm2, tmp_path, lora=bad, max_steps=1))
    assert not (tmp_path / "run" / "checkpoints").exists()  # rejected before any training


def test_learning_rate_defaults_depend_on_lora(tmp_path: Path) -> None:
    base = {"base_model_dir": tmp_path, "train_file": tmp_path / "p.jsonl", "output_dir": tmp_path / "o"}
    assert DPORecipeConfig(**base).learning_rate() == LORA_DPO_LR == 5e-6
    assert DPORecipeConfig(**base, lora=None).learning_rate() == FULL_DPO_LR == 5e-7
    assert DPORecipeConfig(**base, base_learning_rate=1e-5).learning_rate() == 1e-5


def test_cli_runs_openai_format_from_yaml_with_overrides(
    tiny_lfm2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_file = write_jsonl(tmp_path / "prefs.jsonl", [as_openai(r) for r in preference_rows(4)])
    config_file = tmp_path / "dpo.yaml"
    config_file.write_text(
        f"base_model_dir: {tiny_lfm2}\ntrain_file: {train_file}\noutput_dir: {tmp_path / 'cli'}\n"
        "lora:\n  r: 4\n"
    )
    overrides = ["max_steps=2", "lora.r=2", "beta=0.3", "hyperparameters.batch_size=4"]
    main(["--config", str(config_file), *overrides])
    printed = capsys.readouterr().out  # Trainer's log lines, then the result as indented JSON
    out = json.loads(printed[printed.index('{\n  "training"') :])
    assert out["training"]["steps"] == 2 and out["beta"] == 0.3
    adapter_config = json.loads((tmp_path / "cli" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 2


def test_example_config_is_valid() -> None:
    cfg = DPORecipeConfig.from_yaml(Path(__file__).parents[2] / "recipes" / "configs" / "dpo.yaml")
    assert cfg.lora is not None and cfg.lora.target_modules is None
    assert cfg.learning_rate() == LORA_DPO_LR and cfg.beta == 0.1
