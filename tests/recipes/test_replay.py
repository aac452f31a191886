"""Replay rows against forgetting (recipes/replay.py) and how many a job adds (infra/job_config)."""

from __future__ import annotations

import json

from domain.job_config import ReplayPolicy, replay_count
from eval.probe import load_probe
from recipes.replay import PROMPTS_FILE, mixed, prompt_rows, replay_prompts, replay_rows


def test_the_replay_prompts_are_not_the_probe_and_do_not_use_its_answer_formats() -> None:
    prompts = replay_prompts(1000)
    assert len(prompts) == len(set(prompts)) == 48
    probe = {item.prompt for item in load_probe()}
    assert not probe & set(prompts)
    formats = ("Reply with the number only", "Answer yes or no", "Answer in one word", "Reply with the")
    assert not [p for p in prompts if any(f in p for f in formats)]
    assert all(json.loads(line).keys() == {"prompt"} for line in PROMPTS_FILE.read_text().splitlines())


def test_replay_count_follows_the_policy() -> None:
    default = ReplayPolicy()
    assert replay_count(28, default, "supervised") == 14  # half the training rows
    assert replay_count(6, default, "supervised") == 8  # at least min_rows
    assert replay_count(500, default, "supervised") == 48  # at most max_rows (the prompts there are)
    assert replay_count(28, default, "dpo") == 0  # DPO stays near its reference by its own loss
    assert replay_count(28, ReplayPolicy(fraction=0), "supervised") == 0


def test_only_answers_that_ended_become_rows_and_mixing_is_seeded() -> None:
    prompts = ["a?", "b?", "c?"]
    assert prompt_rows(prompts)[0]["messages"][-1] == {"role": "assistant", "content": ""}
    rows = replay_rows(prompts, [" fine ", "cut off mid", "  "], [True, False, True])
    assert rows == [
        {"messages": [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "fine"}]}
    ]
    train = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(10)]
    once, again = mixed(train, rows, 3), mixed(train, rows, 3)
    assert once == again and len(once) == 11 and once != [*train, *rows]
