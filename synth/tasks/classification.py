"""Classification rows: the label is chosen first and the teacher writes an input a person would
give that label, so the teacher never has to classify anything. The round trip asks it to classify
the text anyway and reads its answer as the eval reads the model's (eval.classification.match_label)."""

from __future__ import annotations

from typing import Any

from domain.job_config import SeedExample, TaskSpec
from eval.classification import match_label
from eval.extraction import parse_json_object
from synth import prompts
from synth.candidates import Candidate, Chunk, Run, chat_row, notes, seed_for
from synth.filters import clean_text, split_label_prefix, text_problem
from synth.tasks.spec import SynthTask
from synth.teacher import ChatRequest

# A label needs a few tokens (eval/runners.py gives one 16); the round trip's answer wraps it in
# `{"label": "..."}` (about 8 tokens more) when the teacher is held to its schema.
LABEL_MAX_TOKENS = 16
ROUND_TRIP_TOKENS = LABEL_MAX_TOKENS + 16


def candidates(run: Run, plan: Chunk) -> list[Candidate]:
    task = run.task
    labels = task.labels or []
    requests = [
        ChatRequest(
            prompts.labelled_text_messages(
                task.description, str(label), v, notes(run, label), seed_for(task, label, v.seed, seed_key)
            ),
            prompts.TEXT_MAX_TOKENS,
            prompts.TEMPERATURE,
            v.seed,
        )
        for label, v in plan
    ]
    system = prompts.classification_instruction(task.description, labels)
    out: list[Candidate] = []
    for (label, v), text in zip(plan, run.client.complete_many(requests, run.should_stop), strict=True):
        if text is None:
            continue  # failed, cancelled or over budget: counted as requested - generated
        run.generated += 1
        text, named = split_label_prefix(clean_text(text), labels)
        # "Positive: great phone" asked for as negative: the teacher disagrees with our label.
        problem = "label_mismatch" if named not in (None, label) else text_problem(text, labels)
        out.append(Candidate(label, text, chat_row(system, text, str(label)), v, "labelled_text", problem))
    return out


def keys(task: TaskSpec) -> list[str | None]:
    return list(task.labels or [])


def seed_key(task: TaskSpec, seed: SeedExample) -> str | None:  # noqa: ARG001 - a SeedKey
    return seed.output if isinstance(seed.output, str) else None


def answer_schema(task: TaskSpec) -> dict[str, Any]:
    """The round trip's answer: one of the labels. An object, as OpenAI's structured outputs need
    one at the root; a weak teacher that never names a label unprompted (the bundled 135M: 0 of 54
    in docs/benchmarks.md) must then pick one, so its agreement measures its choice."""
    labels = {"type": "string", "enum": [str(label) for label in task.labels or []]}
    return {
        "type": "object",
        "properties": {"label": labels},
        "required": ["label"],
        "additionalProperties": False,
    }


def agrees(task: TaskSpec, answer: str, key: str | None, row: dict[str, Any]) -> bool:  # noqa: ARG001
    """Whether the teacher's answer names the label the text was written for: the `label` of the
    object its schema asked for, or, from a teacher that ignored the schema, its text."""
    held = parse_json_object(answer)
    named = held.get("label") if held is not None else None
    return match_label(named if isinstance(named, str) else answer, task.labels or []) == key


TASK = SynthTask(
    candidates,
    keys=keys,
    seed_key=seed_key,
    distribution="label_distribution",
    round_trip_tokens=ROUND_TRIP_TOKENS,
    round_trip_schema=answer_schema,
    round_trip_chance=lambda task: 1 / max(1, len(task.labels or [])),
    agrees=agrees,
)
