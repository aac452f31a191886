"""Ship the best checkpoint, not the last: score the model on held-out rows while it trains, keep
the weights of the best score, stop when the score stops improving, and restore the best at the end.

The score is a callable the caller composes (the worker passes eval's greedy task metric on a
bounded subset of the held-out rows, eval/in_training.py), so this file knows nothing of tasks:

    BestCheckpoint(score, save_dir, evals=5, patience=2)

`evals` scores are taken evenly over the planned steps (every ceil(max_steps / evals) steps, and
always at the last step). A tie with the best moves the best to the later step: at the same score
the more trained weights answer with larger margins, which is what survives quantization (the demo
shipped step 6 of 28, the first of three tied steps, and its Q4_0 GGUF lost 3 of 20 held-out rows;
its last step had lost at most 1). `patience` scores in a row without a strictly higher score stop the run (0:
never). The trainable parameters of the best step (a LoRA adapter's few MB, or a full fine-tune's
weights) are written to `save_dir` with the history, so a resumed run keeps its best; at the end
of training they are loaded back into the model before it is saved.

On several data-parallel ranks (DDP, recipes/distributed.py) every rank holds the whole model: rank
0 alone generates the score (the others wait at the broadcast that follows), every rank takes its
value and so makes the same choice and the same stop, and rank 0 alone writes and restores the
weights (it alone saves the model). A sharded model (FSDP) cannot generate rank by rank: the worker
does not use this callback there.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from transformers import TrainerCallback

from recipes.distributed import is_main_process, shared_from_main

log = logging.getLogger(__name__)

Score = Callable[[Any, Any], float]  # (model, tokenizer) -> higher is better


class Selection(BaseModel):
    """What the run measured and kept (TrainResult.checkpoint_selection)."""

    history: list[tuple[int, float]]  # (step, held-out score)
    best_step: int | None
    best_score: float | None
    stopped_early: bool  # ended by `patience`, before the planned last step
    restored: bool  # the shipped weights are the best step's, not the last step's


class BestCheckpoint(TrainerCallback):
    def __init__(self, score: Score, save_dir: Path, *, evals: int = 5, patience: int = 2) -> None:
        self.score, self.save_dir, self.evals, self.patience = score, save_dir, evals, patience
        self.history: list[tuple[int, float]] = []
        self.best_step: int | None = None  # the latest step with the best score
        self.best_score: float | None = None
        self.stopped = self.restored = False
        self._every = 1

    # ---- the trainer's events ------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._every = max(1, math.ceil(state.max_steps / self.evals))
        self._load_history(state.global_step)  # a resumed run keeps what it measured before

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = state.global_step
        last = step >= state.max_steps  # Trainer's own flow has already set should_training_stop
        cancelled = control.should_training_stop and not last  # a stop request: not scored, ending
        if cancelled or not (last or step % self._every == 0) or any(s == step for s, _ in self.history):
            return control
        main = is_main_process()
        value = shared_from_main(self._measure(kwargs["model"], kwargs["processing_class"]) if main else None)
        self.history.append((step, value))
        log.info("held-out score at step %d: %.4f", step, value)
        if self.best_score is None or value >= self.best_score:
            self.best_step, self.best_score = step, value
            if main:
                self._save_weights(kwargs["model"])
        if self.patience and self._not_better_in_a_row() >= self.patience and step < state.max_steps:
            log.info("no better held-out score in %d evaluations: stopping at step %d", self.patience, step)
            self.stopped = True
            control.should_training_stop = True
        if main:
            self._save_history()
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.best_step is not None and self.best_step != state.global_step and is_main_process():
            self._load_weights(kwargs["model"])
            self.restored = True
            log.info("restored the weights of step %d (score %.4f)", self.best_step, self.best_score)

    def finish_restored(self, model: Any, step: int) -> None:
        """A rerun that found the last step already checkpointed trains nothing (training_common.
        restore_finished): take the best weights of the history the first run left."""
        self._load_history(step)
        if self.best_step is not None and self.best_step != step:
            self._load_weights(model)
            self.restored = True

    def selection(self) -> Selection:
        return Selection(
            history=self.history,
            best_step=self.best_step,
            best_score=self.best_score,
            stopped_early=self.stopped,
            restored=self.restored,
        )

    # ---- the pieces ----------------------------------------------------------------------------

    def _measure(self, model: Any, tokenizer: Any) -> float:
        was_training = model.training
        model.eval()
        try:
            return float(self.score(model, tokenizer))
        finally:
            model.train(was_training)

    def _not_better_in_a_row(self) -> int:
        """Scores since the first one that reached the best score (ties are not improvements)."""
        if self.best_score is None:
            return 0
        first = next(s for s, v in self.history if v >= self.best_score)
        return sum(1 for s, _ in self.history if s > first)

    def _save_weights(self, model: Any) -> None:
        from safetensors.torch import save_file

        self.save_dir.mkdir(parents=True, exist_ok=True)
        trained = ((n, p) for n, p in model.named_parameters() if p.requires_grad)
        tensors = {n: p.detach().to("cpu").contiguous() for n, p in trained}
        save_file(tensors, str(self.save_dir / "weights.safetensors"))

    def _load_weights(self, model: Any) -> None:
        import torch
        from safetensors.torch import load_file

        saved = load_file(str(self.save_dir / "weights.safetensors"))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))

    def _save_history(self) -> None:
        data = {"history": self.history, "best_step": self.best_step, "best_score": self.best_score}
        self.save_dir.mkdir(parents=True, exist_ok=True)
        (self.save_dir / "history.json").write_text(json.dumps(data))

    def _load_history(self, resumed_at: int) -> None:
        """What an earlier attempt measured up to the checkpoint this run resumes from. Scores
        after it are dropped (those steps run again); a best after it is forgotten with them, as
        its saved weights belong to steps this run has not reached."""
        path = self.save_dir / "history.json"
        if not (path.is_file() and (self.save_dir / "weights.safetensors").is_file()):
            return
        data = json.loads(path.read_text())
        self.history = [(int(s), float(v)) for s, v in data["history"] if int(s) <= resumed_at]
        if data["best_step"] is not None and data["best_step"] <= resumed_at:
            self.best_step, self.best_score = int(data["best_step"]), float(data["best_score"])
        else:  # the best lies past the resume point, its weights with it: measure afresh
            self.history = []
