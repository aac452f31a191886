"""The held-out task score of a model while it trains (recipes/best_checkpoint.py's `score`).

Cheap by design, since it runs several times inside the train stage: greedy answers from the model
in memory to the first `max_rows` held-out rows, scored by the same metric and labels as the
evaluate stage (eval.metrics.score). The gate still judges on every held-out row and on the shipped
artifacts, so choosing among a few checkpoints on this subset is a small selection on rows the gate
also reads: README ("Checkpoint selection") says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eval.metrics import score
from eval.runners import MAX_NEW_TOKENS, Device, generate_loaded, prompts_and_references
from eval.scoring import HeldOut


def held_out_score(held_out: HeldOut, max_rows: int) -> Callable[[Any, Any], float]:
    """A (model, tokenizer) -> headline score function over the first `max_rows` held-out rows."""
    rows, task_type, labels = held_out
    subset = rows[:max_rows]
    _, references = prompts_and_references(subset)

    def measure(model: Any, tokenizer: Any) -> float:
        device: Device = "cuda" if next(model.parameters()).is_cuda else "cpu"
        answers = generate_loaded(tokenizer, model, subset, MAX_NEW_TOKENS[task_type], device=device)
        return score(task_type, answers, references, labels).score

    return measure
