"""Base against fine-tuned, as the evaluate stage scores them: the held-out rows and the
general-ability probe, each model loaded once. The worker calls it in its own process on a CPU
worker and in worker/eval_process.py's child on a GPU worker; both get the same results.

Given the training rows as `shots`, the base model also answers the held-out rows prompted well
for the task (eval/prompting.py: the task's instruction and k examples from the training rows),
scored by the same metric: the fair baseline, since the bare base answers in sentences and
scores near 0 whatever the task."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from eval.metrics import EvalResult, TaskType
from eval.probe import ProbeItem
from eval.runners import Device

HeldOut = tuple[list[dict[str, Any]], TaskType, list[str] | None]  # rows, how to score them, labels

# The prompted base's context: the model's own, capped here. MAX_SHOTS examples of a short task
# (a label, a sentence of input: ~50 tokens each) fit far below it; the cap binds on long rows
# (extraction documents of ~500 tokens: 7 examples and the row) and bounds what every held-out
# row costs to prefill, one row at a time on a CPU worker (a 4k-token prompt is seconds there).
PROMPTED_MAX_TOKENS = 4096


def score_models(
    base_dir: Path,
    tuned_dir: Path,
    held_out: HeldOut,
    probe: Sequence[ProbeItem],
    *,
    device: Device = "cpu",
    between: Callable[[], None] | None = None,
    shots: list[dict[str, Any]] | None = None,
) -> dict[str, EvalResult]:
    """Base and fine-tuned on the held-out rows and on the general-ability probe's items, keyed
    as the job's `eval_results` ("base", "fine_tuned", "probe_base", "probe_fine_tuned"); with
    `shots` (the training rows) also "base_prompted", the base prompted with k of them, k in its
    `report["shots"]`. `between` runs after the base model's answers (the in-process stage's
    cancel check)."""
    from eval.probe import run_probe
    from eval.runners import evaluate_model, one_load_per_model

    rows, task_type, labels = held_out
    results: dict[str, EvalResult] = {}
    with one_load_per_model():  # each model answers the task rows, prompted rows and probe from one load
        results["base"] = evaluate_model("hf", base_dir, rows, task_type, labels, device=device)
        if shots:
            results["base_prompted"] = score_prompted(base_dir, held_out, shots, results["base"], device)
        probe_base = run_probe("hf", base_dir, probe, device=device)
        if between is not None:
            between()
        results["fine_tuned"] = evaluate_model("hf", tuned_dir, rows, task_type, labels, device=device)
        probe_tuned = run_probe("hf", tuned_dir, probe, device=device)
    return {**results, "probe_base": probe_base, "probe_fine_tuned": probe_tuned}


def score_prompted(
    base_dir: Path, held_out: HeldOut, shots: list[dict[str, Any]], bare: EvalResult, device: Device
) -> EvalResult:
    """The base model on the held-out rows prompted with the task's instruction and k examples
    from `shots`, scored as `bare` was; k goes in `report["shots"]`. Rows the prompting leaves as
    they were (no instruction to add, no example fits) are not answered twice: `bare` is theirs."""
    from eval.runners import evaluate_model

    rows, task_type, labels = held_out
    prompted, k = prompted_rows(base_dir, held_out, shots)
    if prompted == rows:
        result = bare
    else:
        result = evaluate_model("hf", base_dir, prompted, task_type, labels, device=device)
    return replace(result, report={**result.report, "shots": k})


def prompted_rows(base_dir: Path, held_out: HeldOut, shots: list[dict[str, Any]]) -> tuple[list[Any], int]:
    """`eval.prompting.few_shot_rows` with the base model's tokenizer counting each prompt as
    generate_hf renders it (chat template, tools, generation prompt), within `prompt_budget`."""
    from transformers import AutoTokenizer

    from eval.prompting import few_shot_rows
    from eval.runners import _prompt_ids

    rows, task_type, labels = held_out
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    budget = prompt_budget(base_dir, tokenizer)
    return few_shot_rows(rows, shots, task_type, labels, lambda p: len(_prompt_ids(tokenizer, p)), budget)


def prompt_budget(base_dir: Path, tokenizer: Any) -> int:
    """The model's context (config's max_position_embeddings, else the tokenizer's
    model_max_length, which is a huge sentinel when unset), capped at PROMPTED_MAX_TOKENS."""
    config = json.loads((Path(base_dir) / "config.json").read_text())
    limits = [config.get("max_position_embeddings"), getattr(tokenizer, "model_max_length", None)]
    return min([int(n) for n in limits if isinstance(n, int) and 0 < n < 10**7] + [PROMPTED_MAX_TOKENS])
