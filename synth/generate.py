"""Synthesize chat rows for a task spec with a teacher LLM.

    result = synthesize(task, client, seed=42)
    result.train_rows, result.eval_rows   # chat rows; every one passes synth.validate.row_problem
    result.report                         # counts, drop reasons, provenance; JSON-serialisable

The pipeline, top to bottom:

1. Plan (synth.topics): version-2 tasks ask the teacher for topics, then sub-topics, which become
   the rows' subjects; free-text fields of a schema or of the tools get teacher-listed values.
2. Candidates, by task type, in chunks: each type's module (synth/tasks/<type>.py) asks the
   teacher so that the answer is right by construction where it can be (a label chosen first, a
   JSON answer or a tool call sampled from the schema, then the text written for it; chat: a
   request, then its answer);
3. Filters, each drop counted by reason: cleaning and heuristics (synth.filters), grounding,
   validation against the task (synth.validate), copies of a seed, exact and near duplicates
   (MinHash LSH over word 3-grams), then the optional LLM judge with the task's rubric.
4. Balance and split: rows are wanted per label (per tool), the eval split is taken first,
   stratified, train gets the rest up to its quota, and train is checked against eval once more.

Synthesis runs in rounds (at most MAX_ROUNDS, and MAX_REQUESTS_PER_ROW requests per row asked for
in all): each asks for the shortfall times the inverse of the yield so far (OVERGENERATE at first),
in chunks that re-plan from what is still missing, so a good teacher is not asked for much more
than needed and a weak one is asked for enough at once. The commonest fixable drop reason of a
round steers the next (a sentence from prompts.STEER_HINTS in its writing requests). The report
lists every round (requested, kept against asked, top drop reasons, steer), the floor the set must
reach to be trained on (synth.floor) and what it lacks, if anything (`short`). Every kept row
carries its provenance under `row["provenance"]` (teacher model, prompt template and version,
seeds, subject); upload validation and training ignore that key.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domain.job_config import TaskSpec, eval_quota
from eval.metrics import binomial_tail
from synth import prompts
from synth.candidates import Candidate, Run, copy_problem
from synth.filters import (
    DedupIndex,
)
from synth.floor import below_floor, top_drop_reasons
from synth.floor import floor as data_floor
from synth.tasks import SYNTH_TASKS
from synth.teacher import ChatRequest, StopFn, TeacherClient, TeacherUsage
from synth.topics import Plan, plan_subjects, value_pools
from synth.validate import answer_of, row_problem

OVERGENERATE = 1.5  # requests per missing row: most teachers lose a third of outputs to filters
# Hard cap on a run's requests, however bad the yield. The bundled 135M teacher keeps 35-50% of its
# classification texts (most drops are label echoes), so 3 was just enough; 4 leaves a margin.
MAX_REQUESTS_PER_ROW = 4
MIN_CHUNK = 16
MAX_ROUNDS = 6
STEER_SHARE = 0.25  # a drop reason steers the next round when it is at least this share of the drops

ProgressFn = Callable[[int, int], None]  # (rows kept so far, rows wanted)
RoundFn = Callable[[dict[str, Any]], None]  # one round's summary, as in report["rounds"]


def _never() -> bool:
    return False


@dataclass
class SynthResult:
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    report: dict[str, Any]
    usage: TeacherUsage
    # Each row's provenance (also under row["provenance"]), aligned with train_rows + eval_rows.
    row_provenance: list[dict[str, Any]] = field(default_factory=list)


def synthesize(
    task: TaskSpec,
    client: TeacherClient,
    seed: int,
    should_stop: StopFn = _never,
    on_progress: ProgressFn | None = None,
    on_round: RoundFn | None = None,
    min_eval_rows: int = 0,
) -> SynthResult:
    """Generate `task.num_examples` rows (fewer if the teacher's yield is poor or the run stops).

    Args:
        task: what to generate; `task.type` picks the recipe.
        client: the teacher; its `usage` is reported, so use one client per run.
        seed: seeds the plan, subjects, styles, sampled answers, per-request teacher seeds and the split.
        should_stop: polled between requests; when true, synthesis stops and returns what it kept.
        on_progress: called after every chunk with (rows kept, rows wanted).
        on_round: called after every round with its summary (a job's events tell the customer).
        min_eval_rows: a job's gate's; the held-out quota is raised to it (infra/job_config.eval_quota)
            and it is part of the floor.

    Raises:
        TeacherError: the teacher failed many requests in a row (see TeacherClient.complete_many).
    """
    started = time.monotonic()
    rng = random.Random(seed)
    run = Run(task, client, should_stop, _plan(task, client, rng, should_stop))
    for example in task.seed_examples:
        run.seeds.add(example.input)
    targets = targets_for(task)
    eval_targets = eval_targets_for(targets, eval_quota(task.num_examples, task.eval_fraction, min_eval_rows))
    cap = MAX_REQUESTS_PER_ROW * task.num_examples
    while _shortfall(targets, run.kept) and run.requested < cap and len(run.rounds) < MAX_ROUNDS:
        if should_stop() or client.budget_exhausted:
            break
        _round(run, targets, rng, cap, on_progress)
        if on_round:
            on_round(run.rounds[-1])
    if task.round_trips and not should_stop():
        _round_trip_seeds(run)
    train, evals, surplus = _split(run.kept, targets, eval_targets, rng)
    train, overlap = _drop_eval_overlap(train, evals)
    run.dropped["surplus"] += surplus
    run.dropped["eval_overlap"] += overlap
    report = _report(run, train, evals, seed, stopped=_stop_reason(run, targets, cap))
    report["floor"] = data_floor(targets, eval_targets, min_eval_rows)
    report["short"] = below_floor(report["floor"], [c.key for c in train], len(evals))
    report["elapsed_s"] = round(time.monotonic() - started, 2)
    rows = [_with_provenance(run, c, "train", seed) for c in train]
    eval_rows = [_with_provenance(run, c, "eval", seed) for c in evals]
    provenance = [r["provenance"] for r in rows + eval_rows]
    return SynthResult(rows, eval_rows, report, client.usage, provenance)


def _plan(task: TaskSpec, client: TeacherClient, rng: random.Random, should_stop: StopFn) -> Plan:
    if not SYNTH_TASKS[task.type].topics:
        plan = Plan([(None, s) for s in prompts.SUBJECTS])
    else:
        plan = plan_subjects(task, client, rng, should_stop)
    plan.pools, pool_requests = value_pools(task, client, rng, should_stop)
    plan.requests += pool_requests
    return plan


def targets_for(task: TaskSpec) -> dict[str | None, int]:
    """Rows wanted per label or per tool (balanced, remainder to the first), else {None: n}."""
    keys = SYNTH_TASKS[task.type].keys(task)
    base, extra = divmod(task.num_examples, len(keys))
    return {key: base + (i < extra) for i, key in enumerate(keys)}


def _shortfall(targets: dict[str | None, int], kept: list[Candidate]) -> dict[str | None, int]:
    have = Counter(k.key for k in kept)
    return {key: n - have[key] for key, n in targets.items() if n > have[key]}


def _kept_toward(targets: dict[str | None, int], kept: list[Candidate]) -> int:
    """Kept rows that count toward the targets (a label's surplus does not)."""
    return sum(targets.values()) - sum(_shortfall(targets, kept).values())


def _round(
    run: Run, targets: dict[str | None, int], rng: random.Random, cap: int, on_progress: ProgressFn | None
) -> None:
    """One round: the shortfall times the request factor, asked in chunks that each re-plan from
    what is still missing; then its summary, and the steer for the next."""
    # kept counts rows toward the targets: a chunk may overshoot a label, and the surplus is
    # dropped at the split, so "61 of 96 kept" never reads as more than was asked
    requested, dropped_before = run.requested, Counter(run.dropped)
    kept = _kept_toward(targets, run.kept)
    factor = _request_factor(run)
    budget = min(math.ceil(sum(_shortfall(targets, run.kept).values()) * factor), cap - run.requested)
    chunk_size = max(MIN_CHUNK, 4 * run.client.settings.max_concurrency)
    while budget > 0 and (want := _shortfall(targets, run.kept)):
        if run.should_stop() or run.client.budget_exhausted:
            break
        chunk = _plan_chunk(run, want, rng, min(chunk_size, budget), factor)
        budget -= len(chunk)
        _admit(run, _candidates(run, chunk))
        if on_progress:
            on_progress(_kept_toward(targets, run.kept), run.task.num_examples)
    dropped = Counter(run.dropped)
    dropped.subtract(dropped_before)
    dropped = +dropped  # this round's drops only (unary + keeps the positive counts)
    run.rounds.append(
        {
            "round": len(run.rounds) + 1,
            "requested": run.requested - requested,
            "kept": (kept_total := _kept_toward(targets, run.kept)) - kept,
            "kept_total": kept_total,
            "asked": run.task.num_examples,
            "top_drop_reasons": top_drop_reasons(dict(dropped)),
            "steered_against": run.steer,
        }
    )
    run.steer = _next_steer(dropped)


def _request_factor(run: Run) -> float:
    """Requests per missing row: OVERGENERATE at first, then the inverse of the yield so far,
    within [OVERGENERATE, MAX_REQUESTS_PER_ROW]. A teacher keeping 1 row in 10 is asked 4 per
    missing row in its second round, not 1.5 in each of many small ones."""
    if not run.requested:
        return OVERGENERATE
    kept_share = len(run.kept) / run.requested
    inverse = 1 / kept_share if kept_share else MAX_REQUESTS_PER_ROW
    return float(min(max(inverse, OVERGENERATE), MAX_REQUESTS_PER_ROW))


def _next_steer(dropped: Counter[str]) -> str | None:
    """The round's commonest drop reason a writing request can fix, when it is at least
    STEER_SHARE of the round's drops; None otherwise."""
    total = sum(dropped.values())
    for reason, count in dropped.most_common():
        if reason in prompts.STEER_HINTS:
            return reason if count >= STEER_SHARE * total else None
    return None


def _plan_chunk(
    run: Run, want: dict[str | None, int], rng: random.Random, limit: int, factor: float = OVERGENERATE
) -> list[tuple[str | None, prompts.Variation]]:
    """Requests for the next chunk, keys interleaved round-robin so a cut-off chunk stays balanced."""
    per_key = {key: math.ceil(n * factor) for key, n in want.items()}
    order = [key for i in range(max(per_key.values())) for key, n in per_key.items() if i < n][:limit]
    spread = run.task.version >= 2 and SYNTH_TASKS[run.task.type].spread_difficulty
    drawn = prompts.variations(rng, len(order), run.plan.subjects, spread_difficulty=spread)
    return list(zip(order, drawn, strict=True))


def _candidates(run: Run, plan: list[tuple[str | None, prompts.Variation]]) -> list[Candidate]:
    run.requested += len(plan)
    out = SYNTH_TASKS[run.task.type].candidates(run, plan)
    for c in out:
        c.steer = run.steer
    return out


def _admit(run: Run, candidates: list[Candidate]) -> None:
    """Validate, de-duplicate and (with a rubric) judge a chunk's candidates; keep the survivors."""
    fresh = []
    for c in candidates:
        if reason := c.problem or row_problem(run.task, c.row) or copy_problem(run, c.user):
            run.dropped[reason] += 1
        else:
            fresh.append(c)
    if run.task.round_trips:
        fresh = _round_trip(run, fresh)
    if run.task.rubric:
        fresh = _judge(run, fresh)
    for c in fresh:
        # Checked again: two near copies in one chunk both pass the check above.
        if reason := run.index.check(c.user):
            run.dropped[reason] += 1
            continue
        run.index.add(c.user)
        run.kept.append(c)


def _judge(run: Run, candidates: list[Candidate]) -> list[Candidate]:
    """Score each candidate 1-5 against the rubric (temperature 0); keep those >= judge_min_score.

    The judge is an instrument, not ground truth (NeMo Curator's caveat): check its scores against
    a sample read by a person before trusting a threshold. The bundled 135M teacher answers "1" to
    nearly everything, so use a judge only with a capable teacher.
    """
    rubric = run.task.rubric or ""
    requests = [
        ChatRequest(
            prompts.judge_messages(rubric, c.user, answer_of(c.row)),
            prompts.JUDGE_MAX_TOKENS,
            0.0,
            c.variation.seed,
        )
        for c in candidates
    ]
    run.judge_requests += len(requests)
    passed = []
    for c, out in zip(candidates, run.client.complete_many(requests, run.should_stop), strict=True):
        c.judge_score = parse_score(out) if out is not None else None
        if out is None:
            run.dropped["judge_no_answer"] += 1
        elif c.judge_score is None:
            run.dropped["judge_unreadable"] += 1
        elif c.judge_score < run.task.judge_min_score:
            run.dropped["judge_low_score"] += 1
        else:
            passed.append(c)
    return passed


def _round_trip(run: Run, candidates: list[Candidate]) -> list[Candidate]:
    """The teacher answers each row the way the fine-tuned model will be asked (the row's own
    system and user turns, temperature 0), held to its type's answer schema where the teacher's
    settings say how (a label of the list, the extraction's object); its type's `agrees`
    (synth/tasks/) says whether it gave the row's answer (the label the text was written for, or
    the extraction's fields). `measure` counts how often it did; `filter` also drops the rest
    (`round_trip_disagrees`, or `round_trip_no_answer` when the request failed).

    A weak teacher is a weak classifier and extractor too: its disagreement says as much about it
    as about the row, so the rate is reported before anything is dropped by default (README,
    Synthetic data), beside its agreement with the customer's own seeds (_round_trip_seeds)."""
    if SYNTH_TASKS[run.task.type].agrees is None:
        return candidates  # domain/lists.py TASKS and synth/tasks/ agree on which types have one
    run.round_trip["requests"] += len(candidates)
    drop = run.task.round_trip == "filter"
    kept = []
    verdicts = _ask_back(run, [(c.key, c.row, c.variation.seed) for c in candidates])
    for c, agrees in zip(candidates, verdicts, strict=True):
        if agrees is None:
            if drop:
                run.dropped["round_trip_no_answer"] += 1
                continue
        else:
            run.round_trip["checked"] += 1
            run.round_trip["agreed"] += agrees
            if drop and not agrees:
                run.dropped["round_trip_disagrees"] += 1
                continue
        kept.append(c)
    return kept


def _round_trip_seeds(run: Run) -> None:
    """The round trip on the customer's seeds that carry an answer: rows known to be right. A
    teacher that agrees with them no more often than a guess cannot judge the task, whatever it
    says of the generated rows; one that agrees with them but not with the rows points at the
    rows. Once per run; not counted with the rows."""
    kind = SYNTH_TASKS[run.task.type]
    if kind.agrees is None or kind.seed_row is None:
        return
    asked = [
        (kind.seed_key(run.task, seed), row, i)
        for i, seed in enumerate(run.task.seed_examples)
        if (row := kind.seed_row(run.task, seed)) is not None
    ]
    verdicts = [v for v in _ask_back(run, asked) if v is not None]
    run.round_trip["seed_checked"] += len(verdicts)
    run.round_trip["seed_agreed"] += sum(verdicts)


def _ask_back(run: Run, rows: list[tuple[str | None, dict[str, Any], int]]) -> list[bool | None]:
    """For each (key, row, request seed): whether the teacher, asked the row as the model will be,
    gave its answer; None where the request failed."""
    kind = SYNTH_TASKS[run.task.type]
    assert kind.agrees is not None
    schema = kind.round_trip_schema(run.task) if kind.round_trip_schema else None
    requests = [
        ChatRequest(row["messages"][:-1], kind.round_trip_tokens, 0.0, seed, schema) for _, row, seed in rows
    ]
    answers = run.client.complete_many(requests, run.should_stop)
    return [
        None if out is None else kind.agrees(run.task, out, key, row)
        for (key, row, _), out in zip(rows, answers, strict=True)
    ]


def _round_trip_report(run: Run) -> dict[str, Any]:
    """The round trip's counts, and, where a guess has a known chance of agreeing (one label of
    n), whether the teacher agreed more often than guessing would: the one-sided binomial p-value
    of `agreed` or more of `checked` at that chance. The same for the customer's seeds (`seeds`),
    and a note that reads the two together (_round_trip_note)."""
    checked, agreed = run.round_trip["checked"], run.round_trip["agreed"]
    out: dict[str, Any] = {
        "mode": run.task.round_trip,
        # how the teacher was held to the answer's schema ("off": the prompt alone asked)
        "structured_output": run.client.settings.structured_output,
        "structured_output_refused": run.client.structured_output_refused,
        "requests": run.round_trip["requests"],
        "checked": checked,
        "agreed": agreed,
        "agreement_rate": _rate(agreed, checked),
    }
    seeds_checked, seeds_agreed = run.round_trip["seed_checked"], run.round_trip["seed_agreed"]
    seeds: dict[str, Any] | None = None
    if seeds_checked:
        seeds = {
            "checked": seeds_checked,
            "agreed": seeds_agreed,
            "agreement_rate": _rate(seeds_agreed, seeds_checked),
        }
        out["seeds"] = seeds
    chance = SYNTH_TASKS[run.task.type].round_trip_chance
    if chance is None:
        return out
    p_guess = chance(run.task)
    out["chance_rate"] = round(p_guess, 4)
    if checked:
        out["above_chance_p_value"] = round(binomial_tail(agreed, checked, p_guess), 4)  # judged as shown
    if seeds is not None:
        seeds["above_chance_p_value"] = round(binomial_tail(seeds_agreed, seeds_checked, p_guess), 4)
    if note := _round_trip_note(out, seeds, p_guess):
        out["note"] = note
    return out


def _rate(agreed: int, checked: int) -> float | None:
    return round(agreed / checked, 4) if checked else None


def _round_trip_note(out: dict[str, Any], seeds: dict[str, Any] | None, p_guess: float) -> str | None:
    """What an agreement no better than a guess (p >= 0.05) means, read against the customer's
    seeds, which are right: a teacher that labels them points at the rows; one that does not label
    them either cannot judge the task. Seeds too few to tell even a teacher agreeing with all of
    them from a guess (2 of 2 at one in two) say nothing either way. None when the rows' agreement
    is above chance. A guess's p-values are in `out` and `seeds` (above_chance_p_value)."""
    if not out["checked"] or out["above_chance_p_value"] < 0.05:
        return None
    guess = f"guessing one answer in {round(1 / p_guess)} would"
    said = (
        f"the teacher agreed with {out['agreed']} of {out['checked']} rows, no more often than {guess} "
        f"(p = {out['above_chance_p_value']:.2f})"
    )
    if seeds is not None and binomial_tail(seeds["checked"], seeds["checked"], p_guess) < 0.05:
        of_seeds = f"{seeds['agreed']} of your {seeds['checked']} own examples"
        if seeds["above_chance_p_value"] < 0.05:
            return (
                f"{said}, though it agreed with {of_seeds}: the rows, not the teacher, are the likely fault"
            )
        return (
            f"{said}, nor with {of_seeds} (p = {seeds['above_chance_p_value']:.2f}): this teacher cannot "
            "judge the task, so the round trip says nothing of the rows"
        )
    return (
        f"{said}: with this teacher the round trip cannot tell right rows from wrong ones, and the rows "
        "may be as poor"
    )


def parse_score(text: str) -> int | None:
    """The first digit 1-5 standing alone in a judge's answer ("4", "Rating: 4", "4/5")."""
    match = re.search(r"(?<!\d)([1-5])(?!\d)", text)
    return int(match.group(1)) if match else None


def eval_targets_for(targets: dict[str | None, int], n_eval: int) -> dict[str | None, int]:
    """The held-out quota spread over the keys in proportion to their targets (largest remainder
    first), so each label's share of the eval is its share of the set."""
    total = sum(targets.values())
    exact = {key: n_eval * n / total for key, n in targets.items()}
    quota = {key: math.floor(x) for key, x in exact.items()}
    by_remainder = sorted(exact, key=lambda key: quota[key] - exact[key])
    for key in by_remainder[: n_eval - sum(quota.values())]:
        quota[key] += 1
    return quota


def _split(
    kept: list[Candidate],
    targets: dict[str | None, int],
    eval_targets: dict[str | None, int],
    rng: random.Random,
) -> tuple[list[Candidate], list[Candidate], int]:
    """(train, eval, surplus). Per key: eval takes its quota first from a seeded shuffle (a key
    short of its target gives at most half of what was kept, so it still trains on at least as
    many rows as it is judged on); train takes up to the rest of the key's target. A single row
    goes to train."""
    train: list[Candidate] = []
    evals: list[Candidate] = []
    for key, target in targets.items():
        pool = [k for k in kept if k.key == key]
        rng.shuffle(pool)
        # a key that met its target gives its whole quota (the quotas sum to at most half the
        # set, so train keeps at least as many rows overall); a short key gives at most half of
        # what it has, and the rows it does not hold out train, up to its target
        n_eval = eval_targets[key] if len(pool) >= target else min(eval_targets[key], len(pool) // 2)
        n_train = min(target - n_eval, len(pool) - n_eval)
        evals += pool[:n_eval]
        train += pool[n_eval : n_eval + n_train]
    rng.shuffle(train)
    rng.shuffle(evals)
    return train, evals, len(kept) - len(train) - len(evals)


def _drop_eval_overlap(train: list[Candidate], evals: list[Candidate]) -> tuple[list[Candidate], int]:
    """Train without any row that duplicates an eval row. Every kept row was already checked
    against all earlier ones, so this finds nothing unless that invariant breaks; it is the one
    place the promise "no eval row leaks into train" is enforced, so it stays explicit."""
    index = DedupIndex()
    for c in evals:
        index.add(c.user)
    clean = [c for c in train if index.check(c.user) is None]
    return clean, len(train) - len(clean)


def _stop_reason(run: Run, targets: dict[str | None, int], cap: int) -> str | None:
    if not _shortfall(targets, run.kept):
        return None
    if run.should_stop():
        return "cancelled"
    if run.client.budget_exhausted:
        return "budget"
    if run.requested >= cap:
        return "request_cap"
    return "rounds" if len(run.rounds) >= MAX_ROUNDS else None


def _report(
    run: Run, train: list[Candidate], evals: list[Candidate], seed: int, stopped: str | None
) -> dict[str, Any]:
    """Counts add up: generated == kept + sum(dropped_by_reason). `requested` counts the candidate
    requests planned; `unanswered` = requested - generated failed, or were never sent because the
    run was cancelled or out of budget. Chat counts its user requests, not their answers; planning
    and judge requests are counted apart (`planning.requests`, `judge.requests`)."""
    dups = run.dropped["duplicate"] + run.dropped["near_duplicate"]
    task = run.task
    report: dict[str, Any] = {
        "type": task.type,
        "version": task.version,
        "task_type": task.task_type,
        "requested": run.requested,
        "generated": run.generated,
        "unanswered": run.requested - run.generated,
        "asked": task.num_examples,
        "kept": len(train) + len(evals),
        "train": len(train),
        "eval": len(evals),
        "dropped_by_reason": dict(sorted((r, n) for r, n in run.dropped.items() if n)),
        "duplicate_rate": round(dups / run.generated, 4) if run.generated else 0.0,
        "stopped": stopped,
        "rounds": run.rounds,
        "planning": {
            "requests": run.plan.requests,
            "topics": sorted({t for t, _ in run.plan.subjects if t}),
            "subjects": len(run.plan.subjects),
            "value_pools": {path: len(values) for path, values in run.plan.pools.items()},
        },
        "provenance": {
            "teacher_model": run.client.settings.model,
            "prompt_version": prompts.PROMPT_VERSION,
            "templates": {
                t: prompts.TEMPLATE_VERSIONS[t] for t in sorted({c.template for c in train + evals})
            },
            "seed": seed,
        },
        "usage": run.client.usage.as_dict(),
        "cost_usd": round(run.client.cost_usd, 6),
    }
    if task.rubric:
        scores = [c.judge_score for c in train + evals if c.judge_score is not None]
        report["judge"] = {
            "requests": run.judge_requests,
            "min_score": task.judge_min_score,
            "mean_kept_score": round(sum(scores) / len(scores), 3) if scores else None,
        }
    if task.round_trips:
        report["round_trip"] = _round_trip_report(run)
    if name := SYNTH_TASKS[task.type].distribution:
        report[name] = {
            key: {"train": sum(c.key == key for c in train), "eval": sum(c.key == key for c in evals)}
            for key in targets_for(task)
        }
    return report


def _with_provenance(run: Run, c: Candidate, split: str, seed: int) -> dict[str, Any]:
    """The row, with where it came from: enough to regenerate it or to trace a bad one."""
    v = c.variation
    provenance = {
        "split": split,
        "teacher_model": run.client.settings.model,
        "template": c.template,
        "template_version": prompts.TEMPLATE_VERSIONS[c.template],
        "prompt_version": prompts.PROMPT_VERSION,
        "seed": seed,
        "request_seed": v.seed,
        "key": c.key,
        "topic": v.topic,
        "subject": v.subject,
        "style": v.style,
        "difficulty": v.difficulty,
        "judge_score": c.judge_score,
        "steered_against": c.steer,
    }
    # "" and None: not part of this row's prompt (a listed text has no subject or style)
    return {**c.row, "provenance": {k: val for k, val in provenance.items() if val not in (None, "")}}
