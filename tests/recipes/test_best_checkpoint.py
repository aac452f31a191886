"""Best-checkpoint selection and early stopping (recipes/best_checkpoint.py) in a real LoRA run of
the tiny LFM2, with a scripted score (the composable part) and with eval's real held-out score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from recipes.best_checkpoint import BestCheckpoint
from recipes.lora_sft import train
from tests.recipes.conftest import sentiment_rows
from tests.recipes.test_lora_sft import Recorder, config


class Scripted:
    """Scores in a given order; keeps a copy of the trainable weights each time it is asked."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.seen = list(values), []  # type: ignore[var-annotated]
        self.weights: list[dict[str, torch.Tensor]] = []

    def __call__(self, model: Any, tokenizer: Any) -> float:
        assert not model.training  # scored in eval mode (no dropout), put back after
        self.weights.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return self.values.pop(0)


def _adapter(result: Any) -> dict[str, torch.Tensor]:
    return load_file(result.adapter_dir / "adapter_model.safetensors")


def _same(saved: dict[str, torch.Tensor], snapshot: dict[str, torch.Tensor]) -> bool:
    # PEFT saves "base_model.model.<name>" without the adapter's ".default"
    by_name = {n.replace(".default", ""): t for n, t in snapshot.items()}
    return saved.keys() == by_name.keys() and all(torch.equal(saved[k], by_name[k]) for k in saved)


def test_patience_stops_early_and_the_best_weights_ship(tiny_lfm2: Path, tmp_path: Path) -> None:
    score = Scripted([0.2, 0.6, 0.5, 0.4, 0.9])  # best at the 2nd; the 3rd and 4th are not better
    best = BestCheckpoint(score, tmp_path / "run" / "best", evals=5, patience=2)
    recorder = Recorder()
    result = train(config(tiny_lfm2, tmp_path, max_steps=20, save_steps=50), [recorder, best])

    selection = result.checkpoint_selection
    assert selection is not None
    assert [s for s, _ in selection.history] == [4, 8, 12, 16]  # every ceil(20 / 5) steps
    assert [v for _, v in selection.history] == [0.2, 0.6, 0.5, 0.4]
    assert selection.best_step == 8 and selection.best_score == 0.6
    assert selection.stopped_early and selection.restored
    assert recorder.steps[-1] == 16 and result.steps == 16
    # a finished run, not a cancelled one: outputs written, not flagged as stopped
    assert not result.stopped_early and result.merged_dir is not None and result.adapter_dir is not None
    assert _same(_adapter(result), score.weights[1])  # the weights scored at step 8
    assert not _same(_adapter(result), score.weights[3])  # not the last ones


def test_without_patience_every_step_runs_and_the_last_can_be_the_best(
    tiny_lfm2: Path, tmp_path: Path
) -> None:
    score = Scripted([0.1, 0.2, 0.3])
    best = BestCheckpoint(score, tmp_path / "run" / "best", evals=3, patience=0)
    result = train(config(tiny_lfm2, tmp_path, max_steps=9, save_steps=50), [best])
    selection = result.checkpoint_selection
    assert selection is not None and [s for s, _ in selection.history] == [3, 6, 9]
    assert selection.best_step == 9 and not selection.restored and not selection.stopped_early
    assert _same(_adapter(result), score.weights[2])


def test_a_rerun_of_a_finished_run_ships_the_best_it_measured(tiny_lfm2: Path, tmp_path: Path) -> None:
    first_score = Scripted([0.9, 0.1, 0.1])
    first = train(
        config(tiny_lfm2, tmp_path, max_steps=6, save_steps=6),
        [BestCheckpoint(first_score, tmp_path / "run" / "best", evals=3, patience=0)],
    )
    assert first.checkpoint_selection is not None and first.checkpoint_selection.best_step == 2
    shutil.rmtree(tmp_path / "run" / "merged")  # the worker died while saving, say
    untouched = Scripted([])
    again = train(
        config(tiny_lfm2, tmp_path, max_steps=6, save_steps=6),
        [BestCheckpoint(untouched, tmp_path / "run" / "best", evals=3, patience=0)],
    )
    assert untouched.weights == []  # nothing trained, nothing scored again
    selection = again.checkpoint_selection
    assert selection is not None and selection.best_step == 2 and selection.restored
    assert _same(_adapter(again), first_score.weights[0])
    history = json.loads((tmp_path / "run" / "best" / "history.json").read_text())
    assert history["best_step"] == 2


def test_the_held_out_score_is_the_task_metric_on_a_bounded_subset(tiny_lfm2: Path, tmp_path: Path) -> None:
    from eval.in_training import held_out_score

    rows = sentiment_rows(8)
    calls: list[float] = []
    measure = held_out_score((rows, "classification", ["positive", "negative"]), max_rows=4)

    def recording(model: Any, tokenizer: Any) -> float:
        calls.append(measure(model, tokenizer))
        return calls[-1]

    result = train(
        config(tiny_lfm2, tmp_path, max_steps=4, save_steps=50),
        [BestCheckpoint(recording, tmp_path / "run" / "best", evals=2, patience=0)],
    )
    assert len(calls) == 2 and all(0.0 <= v <= 1.0 for v in calls)
    assert result.checkpoint_selection is not None
    assert [v for _, v in result.checkpoint_selection.history] == calls


def test_a_tie_moves_the_best_to_the_later_step_but_is_no_improvement(
    tiny_lfm2: Path, tmp_path: Path
) -> None:
    score = Scripted([0.5, 0.5, 0.5, 0.9])  # the same score twice more: stop, ship the last tie
    best = BestCheckpoint(score, tmp_path / "run" / "best", evals=4, patience=2)
    result = train(config(tiny_lfm2, tmp_path, max_steps=16, save_steps=50), [best])
    selection = result.checkpoint_selection
    assert selection is not None and [s for s, _ in selection.history] == [4, 8, 12]
    assert selection.best_step == 12 and selection.stopped_early and not selection.restored
    assert _same(_adapter(result), score.weights[2])
