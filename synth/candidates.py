"""What a synthesis run holds while it runs, and the pieces every task type's candidates are made
of: a candidate row, the run's state, the teacher's notes for a request, the customer's seed to
vary, the chat row itself, and the checks every type's inputs share (grounding, copies).

synth/generate.py drives the run; synth/tasks/<type>.py turns a chunk of planned requests into
candidates with these."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domain.job_config import SeedExample, TaskSpec
from synth import prompts
from synth.filters import DedupIndex
from synth.sampling import mention_text, missing_from
from synth.teacher import StopFn, TeacherClient
from synth.topics import Plan

# A chunk of planned requests: each the key its row is balanced on (a label, a tool, or None) and
# the variation it is written under.
Chunk = list[tuple[str | None, prompts.Variation]]


@dataclass
class Candidate:
    """One would-be row and how it was made."""

    key: str | None  # what rows are balanced on: the label, the tool's name, or None
    user: str  # the input text: what duplicates are judged on
    row: dict[str, Any]
    variation: prompts.Variation
    template: str  # the prompt template (prompts.TEMPLATE_VERSIONS) that produced the input
    problem: str | None = None  # a drop reason found while building it
    judge_score: int | None = None
    steer: str | None = None  # the drop reason its request was steered against


@dataclass
class Run:
    """State of one synthesis run, passed to the task types' candidate functions."""

    task: TaskSpec
    client: TeacherClient
    should_stop: StopFn
    plan: Plan
    index: DedupIndex = field(default_factory=DedupIndex)
    seeds: DedupIndex = field(default_factory=DedupIndex)
    kept: list[Candidate] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    requested: int = 0
    generated: int = 0
    judge_requests: int = 0
    round_trip: Counter[str] = field(default_factory=Counter)  # requests, checked, agreed
    rounds: list[dict[str, Any]] = field(default_factory=list)
    steer: str | None = None  # this round's: the last round's commonest fixable drop reason


def notes(run: Run, label: str | None = None) -> str:
    """The task's notes for one writing request: language, constraints, what the label means, and
    this round's steer."""
    task = run.task
    about = (task.label_descriptions or {}).get(label or "")
    text = prompts.task_notes(task.language, task.constraints, about)
    return text + (" " + prompts.STEER_HINTS[run.steer] if run.steer else "")


SeedKey = Callable[[TaskSpec, SeedExample], str | None]


def seed_for(task: TaskSpec, key: str | None, request_seed: int, seed_key: SeedKey) -> str | None:
    """One of the customer's seeds to vary: one whose answer has this key (`seed_key`: its label,
    the tool its call names; any seed when none has it), or None without seeds. Extraction seeds
    all fit: the values are sampled apart."""
    keyed = seeds_by_key(task, seed_key).get(key) if key is not None else None
    seeds = keyed or [s.input for s in task.seed_examples]
    return seeds[request_seed % len(seeds)] if seeds else None


def seeds_by_key(task: TaskSpec, seed_key: SeedKey) -> dict[str, list[str]]:
    """The customer's seed inputs grouped by their answer's key (`seed_key`), in the order given;
    seeds without one are left out."""
    out: dict[str, list[str]] = {}
    for seed in task.seed_examples:
        if (key := seed_key(task, seed)) is not None:
            out.setdefault(key, []).append(seed.input)
    return out


def chat_row(system: str, user: str, assistant: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


def grounding_problem(text: str, value: Any) -> str | None:
    """`value_not_in_text` when the text omits a sampled value (the answer would state a fact the
    input does not), `scaffold_echo` when it copied our `key: value` list instead of phrasing it."""
    if missing_from(text, value):
        return "value_not_in_text"
    lowered = text.lower()
    if any(part.lower() in lowered for part in mention_text(value).split(", ") if ": " in part):
        return "scaffold_echo"
    return None


def copy_problem(run: Run, text: str) -> str | None:
    """`seed_copy` for a (near) copy of a customer's seed, else the duplicate reason, else None."""
    if len(run.seeds) and run.seeds.check(text):
        return "seed_copy"
    return run.index.check(text)
