"""Extraction rows: the JSON answer is sampled from the schema (synth.sampling) and the teacher
writes a text that states it; the row is kept only if the text mentions every sampled value. The
round trip asks the teacher to extract it back and agrees only when every field the row states
comes back with the same value (field F1 of 1, as eval.extraction scores)."""

from __future__ import annotations

import json
import random
from typing import Any

from domain.job_config import SeedExample, TaskSpec
from domain.lists import EVAL_TASKS
from eval.extraction import field_f1, parse_json_object
from synth import prompts
from synth.candidates import Candidate, Chunk, Run, chat_row, grounding_problem, notes, seed_for
from synth.filters import clean_text, text_problem
from synth.sampling import mention_text, sample
from synth.tasks.spec import SynthTask, no_key
from synth.teacher import ChatRequest

STRUCTURED_TEXT_MAX_TOKENS = 80  # a text that must state several sampled values needs more room


def candidates(run: Run, plan: Chunk) -> list[Candidate]:
    task = run.task
    schema = task.output_schema or {}
    answers = [sample(schema, random.Random(v.seed), run.plan.pools) for _, v in plan]
    requests = [
        ChatRequest(
            prompts.extraction_text_messages(
                task.description, v, mention_text(value), notes(run), seed_for(task, None, v.seed, no_key)
            ),
            STRUCTURED_TEXT_MAX_TOKENS,
            prompts.TEMPERATURE,
            v.seed,
        )
        for (_, v), value in zip(plan, answers, strict=True)
    ]
    system = prompts.extraction_instruction(task.description, schema)
    outputs = run.client.complete_many(requests, run.should_stop)
    out: list[Candidate] = []
    for (_, v), value, raw in zip(plan, answers, outputs, strict=True):
        if raw is None:
            continue
        run.generated += 1
        text = clean_text(raw)
        answer = json.dumps(value, ensure_ascii=False)
        problem = text_problem(text, meta=False) or grounding_problem(text, value)
        out.append(Candidate(None, text, chat_row(system, text, answer), v, "extraction_text", problem))
    return out


def agrees(task: TaskSpec, answer: str, key: str | None, row: dict[str, Any]) -> bool:  # noqa: ARG001
    """Whether the teacher's JSON object states every field of the row's answer, field for field."""
    reference = parse_json_object(row["messages"][-1]["content"])
    return reference is not None and field_f1(parse_json_object(answer), reference) == 1.0


def answer_schema(task: TaskSpec) -> dict[str, Any] | None:
    """The round trip's answer: an object of the task's own schema."""
    return task.output_schema


def seed_row(task: TaskSpec, seed: SeedExample) -> dict[str, Any] | None:
    """The seed as the row it would be: the task's instruction, its text, its JSON object."""
    if not isinstance(seed.output, dict):
        return None
    system = prompts.extraction_instruction(task.description, task.output_schema or {})
    return chat_row(system, seed.input, json.dumps(seed.output, ensure_ascii=False))


# the eval's own answer budget, so a teacher that writes the object out in full is not cut short
TASK = SynthTask(
    candidates,
    round_trip_tokens=EVAL_TASKS["extraction"].max_new_tokens,
    round_trip_schema=answer_schema,
    agrees=agrees,
    seed_row=seed_row,
)
