"""Rehearsal against forgetting: the base model's own answers to general prompts, as training rows.

A narrow fine-tune on a few dozen rows of one task drifts: asked anything else, the model starts
answering with the task's labels or style (the general-ability probe, eval/probe.py, falls). Mixing
in rows where the *base* model answers ordinary requests — its own greedy answers, so no outside
data and nothing new is taught — keeps the fine-tune answering like the base outside the task
(self-distillation replay). The prompts (`replay_prompts.jsonl`, 48) are short everyday requests;
none is a probe item and none uses the probe's answer formats ("Reply with the number only", "Answer
yes or no", ...), so the probe still measures what carries over rather than what was rehearsed.

    prompts = replay_prompts(n)              # the first n prompts
    answers = <the base model's greedy answers>  (the worker: eval.runners.generate_hf)
    rows = mixed(train_rows, replay_rows(prompts, answers), seed)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

PROMPTS_FILE = Path(__file__).with_name("replay_prompts.jsonl")
MAX_NEW_TOKENS = 96  # an everyday answer of a sentence or three; longer answers are cut and dropped


def replay_prompts(n: int) -> list[str]:
    prompts = [json.loads(line)["prompt"] for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
    return prompts[:n]


def prompt_rows(prompts: list[str]) -> list[dict[str, Any]]:
    """The prompts as rows a generator answers (an empty last assistant turn marks where)."""
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": ""}]} for p in prompts
    ]


def replay_rows(prompts: list[str], answers: list[str], complete: list[bool]) -> list[dict[str, Any]]:
    """Chat rows of the answers that ended on their own (`complete`): a row cut at the token cap
    would teach the model to stop mid-sentence. Empty answers are dropped too."""
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a.strip()}]}
        for p, a, done in zip(prompts, answers, complete, strict=True)
        if done and a.strip()
    ]


def mixed(train: list[dict[str, Any]], replay: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Training and replay rows shuffled together (seeded), so every batch can hold some of each."""
    rows = [*train, *replay]
    random.Random(seed).shuffle(rows)
    return rows
