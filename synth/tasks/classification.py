"""Classification rows: the label is chosen first and the teacher writes an input a person would
give that label (one at a time, or as a list like the customer's seeds of that label), so the
teacher never has to classify anything. The round trip asks it to classify
the text anyway and reads its answer as the eval reads the model's (eval.classification.match_label)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from domain.job_config import SeedExample, TaskSpec
from eval.classification import match_label
from eval.extraction import parse_json_object
from synth import prompts
from synth.candidates import Candidate, Chunk, Run, chat_row, notes, seed_for, seeds_by_key
from synth.filters import clean_text, list_items, split_label_prefix, text_problem
from synth.tasks.spec import SynthTask
from synth.teacher import ChatRequest

# A label needs a few tokens (eval/runners.py gives one 16); the round trip's answer wraps it in
# `{"label": "..."}` (about 8 tokens more) when the teacher is held to its schema.
LABEL_MAX_TOKENS = 16
ROUND_TRIP_TOKENS = LABEL_MAX_TOKENS + 16


@dataclass(frozen=True)
class _Ask:
    """One request to the teacher and the planned rows its answer fills: one for labelled_text,
    up to prompts.LIST_SIZE of one label for labelled_list."""

    request: ChatRequest
    slots: Chunk
    template: str


def candidates(run: Run, plan: Chunk) -> list[Candidate]:
    """A label with the customer's seeds is asked for lists of texts like them; any other label
    for one text at a time. A list answer shorter than its slots leaves the rest unanswered."""
    labels = [str(label) for label in run.task.labels or []]
    system = prompts.classification_instruction(run.task.description, labels)
    asks = _asks(run, plan)
    out: list[Candidate] = []
    for ask, answer in zip(
        asks, run.client.complete_many([a.request for a in asks], run.should_stop), strict=True
    ):
        if answer is None:
            continue  # failed, cancelled or over budget: counted as requested - generated
        texts = list_items(answer)[: len(ask.slots)] if ask.template == "labelled_list" else [answer]
        run.generated += len(texts)
        for (label, v), raw in zip(ask.slots, texts, strict=False):
            text, named = split_label_prefix(clean_text(raw), labels)
            # "Positive: great phone" asked for as negative: the teacher disagrees with our label.
            problem = "label_mismatch" if named not in (None, label) else text_problem(text, labels)
            out.append(Candidate(label, text, chat_row(system, text, str(label)), v, ask.template, problem))
    return out


def _asks(run: Run, plan: Chunk) -> list[_Ask]:
    """The plan's requests: one per slot of an unseeded label, one per LIST_SIZE slots of a seeded
    one (in plan order, so a chunk cut short stays balanced)."""
    seeds = seeds_by_key(run.task, seed_key)
    asks: list[_Ask] = []
    open_lists: dict[str, Chunk] = {}
    for label, v in plan:
        if str(label) not in seeds:
            asks.append(_text_ask(run, str(label), v))
            continue
        group = open_lists.setdefault(str(label), [])
        group.append((label, v))
        if len(group) == prompts.LIST_SIZE:
            asks.append(_list_ask(run, str(label), seeds[str(label)], open_lists.pop(str(label))))
    return asks + [_list_ask(run, label, seeds[label], group) for label, group in open_lists.items()]


def _text_ask(run: Run, label: str, v: prompts.Variation) -> _Ask:
    example = seed_for(run.task, label, v.seed, seed_key)
    messages = prompts.labelled_text_messages(run.task.description, label, v, notes(run, label), example)
    request = ChatRequest(messages, prompts.TEXT_MAX_TOKENS, prompts.TEMPERATURE, v.seed)
    return _Ask(request, [(label, v)], "labelled_text")


def _list_ask(run: Run, label: str, seeds: list[str], group: Chunk) -> _Ask:
    """The label's seeds (at most LIST_EXAMPLES, drawn and ordered by the first slot's seed) and
    a request for one text per slot. The slots' subjects and styles are not in this prompt, so
    their rows' provenance does not claim them."""
    seed = group[0][1].seed
    shown = random.Random(seed).sample(seeds, min(len(seeds), prompts.LIST_EXAMPLES))
    messages = prompts.labelled_list_messages(label, shown, len(group), notes(run, label))
    tokens = prompts.LIST_TOKENS_PER_TEXT * len(group)
    request = ChatRequest(messages, tokens, prompts.TEMPERATURE, seed)
    slots: Chunk = [(key, replace(v, topic=None, subject="", style="")) for key, v in group]
    return _Ask(request, slots, "labelled_list")


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


def seed_row(task: TaskSpec, seed: SeedExample) -> dict[str, Any] | None:
    """The seed as the row it would be: the task's instruction, its text, its label."""
    if not isinstance(seed.output, str):
        return None
    labels = [str(label) for label in task.labels or []]
    return chat_row(prompts.classification_instruction(task.description, labels), seed.input, seed.output)


TASK = SynthTask(
    candidates,
    keys=keys,
    seed_key=seed_key,
    distribution="label_distribution",
    round_trip_tokens=ROUND_TRIP_TOKENS,
    round_trip_schema=answer_schema,
    round_trip_chance=lambda task: 1 / max(1, len(task.labels or [])),
    agrees=agrees,
    seed_row=seed_row,
)
