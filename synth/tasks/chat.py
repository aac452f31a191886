"""Chat rows: the teacher writes a user request (self-instruct from the customer's seeds, spread in
difficulty), then answers it in the task's role. The requests are filtered and de-duplicated
before their answers are paid for."""

from __future__ import annotations

import random

from synth import prompts
from synth.candidates import Candidate, Chunk, Run, chat_row, copy_problem, notes
from synth.filters import MAX_ANSWER_CHARS, DedupIndex, clean_answer, clean_text, text_problem
from synth.tasks.spec import SynthTask
from synth.teacher import ChatRequest


def candidates(run: Run, plan: Chunk) -> list[Candidate]:
    accepted = _requests(run, plan)
    system = prompts.chat_instruction(run.task.description, run.task.constraints)
    answer_requests = [
        ChatRequest(
            prompts.answer_messages(system, text),
            prompts.ANSWER_MAX_TOKENS,
            prompts.ANSWER_TEMPERATURE,
            v.seed,
        )
        for v, text in accepted
    ]
    answers = run.client.complete_many(answer_requests, run.should_stop)
    out = []
    for (v, text), answer in zip(accepted, answers, strict=True):
        cleaned = clean_answer(answer) if answer is not None else ""
        row = chat_row(system, text, cleaned)
        out.append(Candidate(None, text, row, v, "instruction", _answer_problem(answer, cleaned)))
    return out


def _requests(run: Run, plan: Chunk) -> list[tuple[prompts.Variation, str]]:
    """The teacher's user requests that pass the filters and are no copy (of a seed, a kept row, or
    an earlier request in this chunk: `local`)."""
    task = run.task
    seeds = [s.input for s in task.seed_examples]
    requests = [
        ChatRequest(
            prompts.instruction_messages(task.description, v, notes(run), _examples(seeds, v.seed)),
            prompts.INSTRUCTION_MAX_TOKENS,
            prompts.TEMPERATURE,
            v.seed,
        )
        for _, v in plan
    ]
    local = DedupIndex()
    accepted: list[tuple[prompts.Variation, str]] = []
    for (_, v), out in zip(plan, run.client.complete_many(requests, run.should_stop), strict=True):
        if out is None:
            continue
        run.generated += 1
        text = clean_text(out)
        if reason := text_problem(text, meta=False) or copy_problem(run, text) or local.check(text):
            run.dropped[reason] += 1
            continue
        local.add(text)
        accepted.append((v, text))
    return accepted


def _examples(seeds: list[str], request_seed: int) -> list[str]:
    """Up to 2 of the customer's seeds for one instruction request (self-instruct's in-context
    examples; a small teacher loses the thread with more)."""
    return random.Random(request_seed).sample(seeds, min(2, len(seeds)))


def _answer_problem(raw: str | None, cleaned: str) -> str | None:
    if raw is None:
        return "no_answer"
    if len(cleaned.split()) < 2:
        return "answer_too_short"
    if cleaned.endswith(":"):
        return "answer_incomplete"  # "Here's a recipe:" and nothing after it
    if len(cleaned) > MAX_ANSWER_CHARS:
        return "answer_too_long"
    return None


TASK = SynthTask(candidates, spread_difficulty=True)
