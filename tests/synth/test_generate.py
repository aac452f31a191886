"""synthesize() against a scripted teacher: exact counts, splits, dedup, stop reasons.

The fake writes a unique pseudo-random text per request seed, with planted problems: every request
whose seed is divisible by 5 gets the same text (duplicates) and by 7 a text naming its label (leaks).
"""

from __future__ import annotations

import json
import random
import re
import threading
from typing import Any

import pytest

from domain.chat_rows import check_row
from domain.job_config import TaskSpec
from synth.filters import normalize
from synth.generate import MAX_REQUESTS_PER_ROW, SynthResult, synthesize
from synth.prompts import PROMPT_VERSION, classification_instruction
from synth.teacher import TeacherClient, TeacherError, TeacherSettings
from tests.synth.fake_teacher import FakeTeacher, Reply, chat

WORDS = [a + b for a in "bcdfghjklmnp" for b in ("ar", "el", "on", "ix", "um", "ot")]
SENTIMENT = TaskSpec(
    description="Classify the sentiment of a product review.",
    labels=["positive", "negative", "neutral"],
    num_examples=24,
)
COOKING = TaskSpec(description="Answer short questions about cooking at home.", num_examples=8)


def scripted(n: int, payload: dict[str, Any]) -> Reply:
    prompt = payload["messages"][-1]["content"]
    seed = payload.get("seed", n)
    words = " ".join(random.Random(seed).sample(WORDS, 10))
    if label := re.search(r"Write a (\w+) one about", prompt):
        if seed % 5 == 0:
            return chat("The same review text comes back for this request.")
        if seed % 7 == 0:
            return chat(f'Sure! Here is one:\n\n"{words}, so {label.group(1)}."')
        return chat(f'"{words.capitalize()}."')
    if "question or request" in prompt:
        return chat("How do I cook rice the same way?" if seed % 5 == 0 else f"How do I {words}?")
    return chat(f"Answer: you {words}.\n\nThen serve it.", 20, 30)


def run(
    task: TaskSpec,
    script: Any = scripted,
    seed: int = 7,
    stop: Any = lambda: False,
    rounds: list[dict[str, Any]] | None = None,
    min_eval_rows: int = 0,
    **settings: Any,
) -> tuple[SynthResult, int]:
    """Synthesize against a fresh fake; returns the result and how many requests the fake saw."""
    with FakeTeacher(script) as fake:
        opts = {"base_url": fake.base_url, "model": "fake-teacher", "backoff_base_s": 0.01, **settings}
        with TeacherClient(TeacherSettings.model_validate(opts)) as client:
            result = synthesize(
                task,
                client,
                seed=seed,
                should_stop=stop,
                on_round=(rounds.append if rounds is not None else None),
                min_eval_rows=min_eval_rows,
            )
        return result, fake.hits


def assert_consistent(result: SynthResult) -> None:
    report = result.report
    rows = result.train_rows + result.eval_rows
    assert all(check_row(r) is None for r in rows)
    users = [normalize(r["messages"][1]["content"]) for r in rows]
    assert len(set(users)) == len(users), "duplicate user text within or across splits"
    assert report["kept"] == len(rows) == len(result.row_provenance)
    assert (report["train"], report["eval"]) == (len(result.train_rows), len(result.eval_rows))
    assert report["generated"] == report["kept"] + sum(report["dropped_by_reason"].values())
    assert report["requested"] == report["generated"] + report["unanswered"]
    assert report["provenance"]["prompt_version"] == PROMPT_VERSION
    assert report["usage"] == result.usage.as_dict()
    json.dumps(report)  # travels in job events and state


def test_classification_rows_are_balanced_deduplicated_and_accounted_for() -> None:
    result, hits = run(SENTIMENT)
    assert_consistent(result)
    report = result.report
    assert report["kept"] == 24 and report["stopped"] is None
    assert report["label_distribution"] == {lab: {"train": 6, "eval": 2} for lab in SENTIMENT.labels or []}
    assert report["dropped_by_reason"]["duplicate"] >= 1
    assert report["dropped_by_reason"]["label_leak"] >= 1
    assert report["duplicate_rate"] == round(
        report["dropped_by_reason"]["duplicate"] / report["generated"], 4
    )
    assert report["requested"] <= MAX_REQUESTS_PER_ROW * 24 and hits == result.usage.requests
    system = classification_instruction(SENTIMENT.description, SENTIMENT.labels or [])
    assert system.endswith("Answer with exactly one of: positive, negative, neutral.")
    for row in result.train_rows + result.eval_rows:
        sys_msg, user, assistant = row["messages"]
        assert sys_msg["content"] == system and assistant["content"] in (SENTIMENT.labels or [])
        assert not re.search(r"\b(positive|negative|neutral)\b", user["content"], re.I)
        assert not user["content"].startswith(("Sure", '"'))  # preamble and quotes were cleaned


def test_same_seed_same_dataset() -> None:
    first, _ = run(SENTIMENT, seed=3)
    second, _ = run(SENTIMENT, seed=3)
    other, _ = run(SENTIMENT, seed=4)
    assert first.train_rows == second.train_rows and first.eval_rows == second.eval_rows
    assert first.train_rows != other.train_rows


def test_generation_rows() -> None:
    result, _ = run(COOKING)
    assert_consistent(result)
    assert result.report["kept"] == 8 and (result.report["train"], result.report["eval"]) == (6, 2)
    assert "label_distribution" not in result.report
    for row in result.train_rows + result.eval_rows:
        system, user, assistant = row["messages"]
        assert system["content"] == COOKING.description
        assert user["content"].startswith("How do I") and assistant["content"].endswith("Then serve it.")


def test_should_stop_returns_what_was_kept() -> None:
    stop = threading.Event()

    def script(n: int, payload: dict[str, Any]) -> Reply:
        if n == 9:
            stop.set()
        return scripted(n, payload)

    task = SENTIMENT.model_copy(update={"num_examples": 300})
    result, hits = run(task, script, stop=stop.is_set)
    assert_consistent(result)
    assert result.report["stopped"] == "cancelled"
    assert hits <= 10 + 2  # the two requests in flight when stop turned true may finish
    assert 0 < result.report["kept"] <= hits


def test_token_budget_stops_synthesis() -> None:
    result, hits = run(SENTIMENT, max_total_tokens=300)  # 15 tokens a reply: ~16 requests
    assert_consistent(result)
    assert result.report["stopped"] == "budget"
    assert result.usage.total_tokens <= 300 and hits < 24
    assert result.report["kept"] < 24


def test_low_yield_stops_at_the_request_cap() -> None:
    result, hits = run(SENTIMENT, lambda n, p: chat("Every single answer is this same text."))
    assert_consistent(result)
    assert result.report["stopped"] == "request_cap"
    # the cap counts the writing requests; the round trip (measure, by default) asked once more for
    # the one candidate that survived the checks
    assert result.report["requested"] == MAX_REQUESTS_PER_ROW * 24
    assert hits == result.report["requested"] + result.report["round_trip"]["requests"]
    assert result.report["kept"] == 1  # the first copy; a single row goes to train
    assert result.report["dropped_by_reason"]["duplicate"] == result.report["requested"] - 1


def test_dead_teacher_fails_fast() -> None:
    with pytest.raises(TeacherError, match="in a row"):
        run(SENTIMENT, lambda n, p: Reply(500), max_retries=0)


def test_variations_use_every_subject_before_repeating() -> None:
    from synth.prompts import SUBJECTS, variations

    drawn = variations(random.Random(0), len(SUBJECTS) + 5)
    assert sorted(v.subject for v in drawn[: len(SUBJECTS)]) == sorted(SUBJECTS)
    assert len({v.seed for v in drawn}) == len(drawn)


def test_a_short_set_never_gives_training_fewer_rows_than_eval_and_says_what_it_lacks() -> None:
    # One request in 8 writes a fresh text, the rest repeat one: ~12% yield, far below what the
    # request cap needs for 96 rows (the job: 96 asked, 10 kept, 9 of them held out).
    def script(n: int, payload: dict[str, Any]) -> Reply:
        seed = payload.get("seed", n)
        return chat(
            f"How do I {' '.join(random.Random(seed).sample(WORDS, 10))}?" if seed % 8 == 0 else "Same."
        )

    task = COOKING.model_copy(update={"num_examples": 96})
    result, _ = run(
        task,
        lambda n, p: (
            script(n, p) if "question or request" in p["messages"][-1]["content"] else scripted(n, p)
        ),
    )
    assert_consistent(result)
    report = result.report
    assert report["stopped"] == "request_cap" and 0 < report["kept"] < 96
    assert report["train"] >= report["eval"] >= 1
    assert report["floor"]["train"] == 36  # half of the 72 training rows asked (96 less 24 held out)
    assert report["short"] and "training rows" in report["short"][0]
    assert report["asked"] == 96 and len(report["rounds"]) >= 2


def test_rounds_steer_against_the_commonest_drop_reason_and_reach_the_target() -> None:
    # A teacher that names the label (label_leak) unless told not to: the first round keeps
    # nothing, the second is steered against label_leak and fills the set.
    def script(n: int, payload: dict[str, Any]) -> Reply:
        prompt = payload["messages"][-1]["content"]
        seed = payload.get("seed", n)
        words = " ".join(random.Random(seed).sample(WORDS, 10))
        label = re.search(r"Write a (\w+) one about", prompt)
        if label and "Do not name its category" not in prompt:
            return chat(f"{words}, so {label.group(1)}.")
        return chat(f"{words.capitalize()}.")

    seen: list[dict[str, Any]] = []
    result, hits = run(SENTIMENT, script, rounds=seen)
    assert_consistent(result)
    report = result.report
    assert report["kept"] == 24 and report["stopped"] is None and report["short"] == []
    assert seen == report["rounds"] and len(seen) == 2
    assert seen[0]["kept"] == 0 and "label_leak" in seen[0]["top_drop_reasons"]
    assert seen[1]["steered_against"] == "label_leak" and seen[1]["kept_total"] == 24
    # round 2 asked for the shortfall at the cap's rate (nothing kept: 4 requests per missing row)
    assert seen[1]["requested"] <= MAX_REQUESTS_PER_ROW * 24 - seen[0]["requested"]
    assert all(r["provenance"]["steered_against"] == "label_leak" for r in result.train_rows)


def test_a_slow_teacher_with_valid_rows_still_reaches_the_target() -> None:
    def slow(n: int, payload: dict[str, Any]) -> Reply:
        reply = scripted(n, payload)
        reply.delay_s = 0.02
        return reply

    result, _ = run(SENTIMENT, slow)
    assert result.report["kept"] == 24 and result.report["short"] == []


def test_a_jobs_gate_raises_the_held_out_share_but_never_past_half() -> None:
    task = SENTIMENT.model_copy(update={"num_examples": 48})
    result, _ = run(task, min_eval_rows=20)
    assert (result.report["train"], result.report["eval"]) == (28, 20)
    assert result.report["floor"]["eval"] == 20 and result.report["short"] == []
    small, _ = run(SENTIMENT, min_eval_rows=20)  # 24 asked: 12 held out, not 20
    assert (small.report["train"], small.report["eval"]) == (12, 12)


def test_a_full_set_always_meets_its_own_quota() -> None:
    """3 labels, 40 asked, 20 held out: targets 14/13/13 take 7/7/6 by largest remainder, so a
    13-row label gives 7 of its 13 to the eval. A set that met every target must not come out
    short of the held-out rows the plan promised (it did when a key gave at most half)."""
    task = SENTIMENT.model_copy(update={"num_examples": 40})
    result, _ = run(task, min_eval_rows=20)
    assert_consistent(result)
    report = result.report
    assert (report["kept"], report["train"], report["eval"]) == (40, 20, 20) and report["short"] == []
    assert report["label_distribution"] == {
        "positive": {"train": 7, "eval": 7},
        "negative": {"train": 6, "eval": 7},
        "neutral": {"train": 7, "eval": 6},
    }
