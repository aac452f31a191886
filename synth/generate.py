"""Synthesize chat rows for a plain-language task with a teacher LLM.

    result = synthesize(task, client, seed=42)
    result.train_rows, result.eval_rows   # chat rows; every one passes infra.chat_rows.check_row
    result.report                         # counts, drop reasons, provenance; JSON-serialisable

Classification rows are correct by construction: the label is chosen first and the teacher is asked
for an input that a person would give that label, so the teacher never has to classify anything.
Generation rows are two calls: the teacher writes a user request, then answers it in the task's role.

Requests go out in chunks sized to the remaining shortfall times OVERGENERATE, so a good teacher is
not asked for much more than needed and a weak one is asked again (up to MAX_REQUESTS_PER_ROW per
wanted row). Every chunk's outputs are cleaned, filtered and de-duplicated (exact and near) against
everything kept so far, so the final pool holds no duplicate user texts at all. The eval split is then
taken first, stratified by label, and train gets the rest up to its quota; surplus rows are dropped
with reason "surplus".
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.chat_rows import check_row
from infra.job_config import TaskSpec
from synth import prompts
from synth.filters import (
    MAX_ANSWER_CHARS,
    DedupIndex,
    clean_answer,
    clean_text,
    split_label_prefix,
    text_problem,
)
from synth.teacher import ChatRequest, StopFn, TeacherClient, TeacherUsage

OVERGENERATE = 1.5  # requests per missing row: most teachers lose a third of outputs to filters
# Hard cap on a run's requests, however bad the yield. The bundled 135M teacher keeps 35-50% of its
# classification texts (most drops are label echoes), so 3 was just enough; 4 leaves a margin.
MAX_REQUESTS_PER_ROW = 4
MIN_CHUNK = 16

ProgressFn = Callable[[int, int], None]  # (rows kept so far, rows wanted)


def _never() -> bool:
    return False


@dataclass
class SynthResult:
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    report: dict[str, Any]
    usage: TeacherUsage
    # Per-row (subject, style, request seed, split), aligned with train_rows + eval_rows. Kept out of
    # `report`, which travels in job events, because it grows with the dataset.
    row_provenance: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Kept:
    label: str | None  # None for generation
    row: dict[str, Any]
    variation: prompts.Variation


@dataclass
class _Run:
    """State of one synthesis run, passed to the chunk functions."""

    task: TaskSpec
    client: TeacherClient
    should_stop: StopFn
    index: DedupIndex = field(default_factory=DedupIndex)
    kept: list[_Kept] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    requested: int = 0
    generated: int = 0

    def keep_or_drop(self, reason: str | None, user: str, kept: _Kept) -> None:
        reason = reason or self.index.check(user) or (check_row(kept.row) and "invalid_row")
        if reason:
            self.dropped[reason] += 1
        else:
            self.index.add(user)
            self.kept.append(kept)


def synthesize(
    task: TaskSpec,
    client: TeacherClient,
    seed: int,
    should_stop: StopFn = _never,
    on_progress: ProgressFn | None = None,
) -> SynthResult:
    """Generate `task.num_examples` rows (fewer if the teacher's yield is poor or the run stops).

    Args:
        task: what to generate; `task.labels` selects classification.
        client: the teacher; its `usage` is reported, so use one client per run.
        seed: seeds subjects, styles, per-request teacher seeds and the split.
        should_stop: polled between requests; when true, synthesis stops and returns what it kept.
        on_progress: called after every chunk with (rows kept, rows wanted).

    Raises:
        TeacherError: the teacher failed many requests in a row (see TeacherClient.complete_many).
    """
    started = time.monotonic()
    rng = random.Random(seed)
    run = _Run(task, client, should_stop)
    targets = _targets(task)
    cap = MAX_REQUESTS_PER_ROW * task.num_examples
    chunk_size = max(MIN_CHUNK, 4 * client.settings.max_concurrency)
    while (want := _shortfall(targets, run.kept)) and run.requested < cap:
        if should_stop() or client.budget_exhausted:
            break
        plan = _plan_chunk(want, rng, min(chunk_size, cap - run.requested))
        if task.labels:
            _classification_chunk(run, plan)
        else:
            _generation_chunk(run, plan)
        if on_progress:
            on_progress(len(run.kept), task.num_examples)
    train, evals, surplus = _split(run.kept, targets, task.eval_fraction, rng)
    run.dropped["surplus"] += surplus
    report = _report(run, train, evals, seed, stopped=_stop_reason(run, targets, cap))
    report["elapsed_s"] = round(time.monotonic() - started, 2)
    provenance = [_provenance(k, "train") for k in train] + [_provenance(k, "eval") for k in evals]
    return SynthResult([k.row for k in train], [k.row for k in evals], report, client.usage, provenance)


def _targets(task: TaskSpec) -> dict[str | None, int]:
    """Rows wanted per label (balanced, remainder to the first labels), or {None: n} for generation."""
    if not task.labels:
        return {None: task.num_examples}
    base, extra = divmod(task.num_examples, len(task.labels))
    return {label: base + (i < extra) for i, label in enumerate(task.labels)}


def _shortfall(targets: dict[str | None, int], kept: list[_Kept]) -> dict[str | None, int]:
    have = Counter(k.label for k in kept)
    return {key: n - have[key] for key, n in targets.items() if n > have[key]}


def _plan_chunk(
    want: dict[str | None, int], rng: random.Random, limit: int
) -> list[tuple[str | None, prompts.Variation]]:
    """Requests for the next chunk, labels interleaved round-robin so a cut-off chunk stays balanced."""
    per_key = {key: math.ceil(n * OVERGENERATE) for key, n in want.items()}
    order = [key for i in range(max(per_key.values())) for key, n in per_key.items() if i < n][:limit]
    return list(zip(order, prompts.variations(rng, len(order)), strict=True))


def _classification_chunk(run: _Run, plan: list[tuple[str | None, prompts.Variation]]) -> None:
    labels = run.task.labels or []
    desc = run.task.description
    requests = [
        ChatRequest(
            prompts.labelled_text_messages(desc, str(label), v),
            prompts.TEXT_MAX_TOKENS,
            prompts.TEMPERATURE,
            v.seed,
        )
        for label, v in plan
    ]
    run.requested += len(requests)
    system = prompts.classification_instruction(desc, labels)
    for (label, v), out in zip(plan, run.client.complete_many(requests, run.should_stop), strict=True):
        if out is None:
            continue  # failed, cancelled or over budget: counted as requested - generated
        run.generated += 1
        text, named = split_label_prefix(clean_text(out), labels)
        # "Positive: great phone" asked for as negative: the teacher disagrees with our label.
        reason = "label_mismatch" if named not in (None, label) else text_problem(text, labels)
        run.keep_or_drop(reason, text, _Kept(label, _row(system, text, str(label)), v))


def _generation_chunk(run: _Run, plan: list[tuple[str | None, prompts.Variation]]) -> None:
    desc = run.task.description
    requests = [
        ChatRequest(
            prompts.instruction_messages(desc, v), prompts.INSTRUCTION_MAX_TOKENS, prompts.TEMPERATURE, v.seed
        )
        for _, v in plan
    ]
    run.requested += len(requests)
    # Filter and de-duplicate the requests before paying for their answers. A request is entered in
    # the index when accepted, so a copy later in the chunk is caught too (even if its answer fails).
    accepted: list[tuple[prompts.Variation, str]] = []
    for (_, v), out in zip(plan, run.client.complete_many(requests, run.should_stop), strict=True):
        if out is None:
            continue
        run.generated += 1
        text = clean_text(out)
        if reason := text_problem(text, meta=False) or run.index.check(text):
            run.dropped[reason] += 1
            continue
        run.index.add(text)
        accepted.append((v, text))
    answer_requests = [
        ChatRequest(
            prompts.answer_messages(desc, text), prompts.ANSWER_MAX_TOKENS, prompts.ANSWER_TEMPERATURE, v.seed
        )
        for v, text in accepted
    ]
    answers = run.client.complete_many(answer_requests, run.should_stop)
    for (v, text), answer in zip(accepted, answers, strict=True):
        cleaned = clean_answer(answer) if answer is not None else ""
        row = _row(desc.strip(), text, cleaned)
        reason = _answer_problem(answer, cleaned) or (check_row(row) and "invalid_row")
        if reason:
            run.dropped[reason] += 1
        else:
            run.kept.append(_Kept(None, row, v))


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


def _row(system: str, user: str, assistant: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


def _split(
    kept: list[_Kept], targets: dict[str | None, int], eval_fraction: float, rng: random.Random
) -> tuple[list[_Kept], list[_Kept], int]:
    """(train, eval, surplus). Per label: eval takes its quota first from a seeded shuffle, then train
    takes up to the rest of the label's target. A label with a single row gives it to train."""
    train: list[_Kept] = []
    evals: list[_Kept] = []
    for key, target in targets.items():
        pool = [k for k in kept if k.label == key]
        rng.shuffle(pool)
        n_eval = min(max(1, round(target * eval_fraction)), len(pool) - 1) if len(pool) > 1 else 0
        n_train = min(target - n_eval, len(pool) - n_eval)
        evals += pool[:n_eval]
        train += pool[n_eval : n_eval + n_train]
    rng.shuffle(train)
    rng.shuffle(evals)
    return train, evals, len(kept) - len(train) - len(evals)


def _stop_reason(run: _Run, targets: dict[str | None, int], cap: int) -> str | None:
    if not _shortfall(targets, run.kept):
        return None
    if run.should_stop():
        return "cancelled"
    if run.client.budget_exhausted:
        return "budget"
    return "request_cap" if run.requested >= cap else None


def _report(
    run: _Run, train: list[_Kept], evals: list[_Kept], seed: int, stopped: str | None
) -> dict[str, Any]:
    """Counts add up: generated == kept + sum(dropped_by_reason). `requested` counts the candidate
    requests planned; `unanswered` = requested - generated failed, or were never sent because the
    run was cancelled or out of budget. Generation counts its user requests, not their answers."""
    dups = run.dropped["duplicate"] + run.dropped["near_duplicate"]
    report: dict[str, Any] = {
        "task_type": run.task.task_type,
        "requested": run.requested,
        "generated": run.generated,
        "unanswered": run.requested - run.generated,
        "kept": len(train) + len(evals),
        "train": len(train),
        "eval": len(evals),
        "dropped_by_reason": dict(sorted((r, n) for r, n in run.dropped.items() if n)),
        "duplicate_rate": round(dups / run.generated, 4) if run.generated else 0.0,
        "stopped": stopped,
        "provenance": {
            "teacher_model": run.client.settings.model,
            "prompt_version": prompts.PROMPT_VERSION,
            "seed": seed,
        },
        "usage": run.client.usage.as_dict(),
    }
    if run.task.labels:
        report["label_distribution"] = {
            label: {
                "train": sum(k.label == label for k in train),
                "eval": sum(k.label == label for k in evals),
            }
            for label in run.task.labels
        }
    return report


def _provenance(kept: _Kept, split: str) -> dict[str, Any]:
    v = kept.variation
    return {
        "split": split,
        "label": kept.label,
        "subject": v.subject,
        "style": v.style,
        "teacher_seed": v.seed,
    }
